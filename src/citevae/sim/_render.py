"""Numpy ray caster for Causal3DIdent-like scenes: one object of ellipsoids before a lit backdrop.

Orthographic camera looking down -z; image coordinates u (right) and v (up) in [-1, 1]. Each of
the seven classes is a union of ellipsoids (object coordinates, y up, extent about [-1, 1]). A pixel
shows the front-most ellipsoid hit by its ray, shaded with Lambert + Blinn-Phong under a spotlight
whose direction and backdrop spot follow the spotlight angle. Deterministic: no randomness.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("Teapot", "Hare", "Dragon", "Cow", "Armadillo", "Horse", "Head")
LATENT_NAMES = (
    "pos_x", "pos_y", "pos_z", "rot_phi", "rot_theta", "rot_psi",
    "spot_pos", "spot_hue", "bg_hue", "obj_hue",
)  # fmt: skip
"""Continuous latents, each in [-1, 1]; see ``SCENE_UNITS`` for their mapping to the scene."""
SCENE_UNITS = {
    "pos_x": "image u of the object centre = 0.5 * pos_x",
    "pos_y": "image v of the object centre = 0.5 * pos_y",
    "pos_z": "depth; object scale = 0.45 * 2 ** (-0.5 * pos_z) (larger z = farther = smaller)",
    "rot_phi": "in-plane rotation about the viewing axis, pi * rot_phi radians (wraps)",
    "rot_theta": "rotation about the image x axis, pi * rot_theta radians (wraps)",
    "rot_psi": "rotation about the image y axis, pi * rot_psi radians (wraps)",
    "spot_pos": "spotlight angle s = pi/2 * spot_pos on the half circle left (-1), top (0), right (1)",
    "spot_hue": "hue of the light, (spot_hue + 1) / 2 of the colour circle (wraps), 50% tint",
    "bg_hue": "hue of wall and floor, (bg_hue + 1) / 2 of the colour circle (wraps)",
    "obj_hue": "hue of the object, (obj_hue + 1) / 2 of the colour circle (wraps)",
}
HORIZON_V = -0.35
"""Image v below which the backdrop is floor (darker) rather than wall."""

# Primitives: (cx, cy, cz, rx, ry, rz, tilt in degrees about the object's z axis).
_SHAPES: dict[str, list[tuple[float, ...]]] = {
    "Teapot": [
        (0.0, 0.0, 0.0, 0.62, 0.45, 0.62, 0),
        (0.0, 0.42, 0.0, 0.36, 0.09, 0.36, 0),
        (0.0, 0.55, 0.0, 0.12, 0.11, 0.12, 0),
        (0.72, 0.2, 0.0, 0.38, 0.08, 0.08, 40),
        (-0.72, 0.05, 0.0, 0.1, 0.32, 0.08, 0),
        (0.0, -0.42, 0.0, 0.42, 0.07, 0.42, 0),
    ],
    "Hare": [
        (0.0, -0.25, 0.0, 0.5, 0.33, 0.3, 10),
        (0.45, 0.15, 0.0, 0.23, 0.2, 0.2, 0),
        (0.38, 0.65, 0.0, 0.07, 0.36, 0.06, 10),
        (0.55, 0.62, 0.06, 0.07, 0.33, 0.06, -18),
        (-0.55, -0.1, 0.0, 0.11, 0.11, 0.11, 0),
        (0.25, -0.58, 0.0, 0.28, 0.06, 0.1, 0),
    ],
    "Dragon": [
        (0.0, 0.0, 0.0, 0.45, 0.2, 0.2, 0),
        (0.45, 0.32, 0.0, 0.3, 0.08, 0.08, 55),
        (0.68, 0.62, 0.0, 0.22, 0.09, 0.09, 0),
        (-0.15, 0.5, 0.1, 0.5, 0.12, 0.04, 35),
        (0.15, 0.5, -0.1, 0.5, 0.12, 0.04, -35),
        (-0.72, -0.25, 0.0, 0.45, 0.06, 0.06, -25),
        (0.2, -0.3, 0.0, 0.06, 0.2, 0.06, 0),
        (-0.2, -0.3, 0.0, 0.06, 0.2, 0.06, 0),
    ],
    "Cow": [
        (0.0, 0.0, 0.0, 0.62, 0.3, 0.32, 0),
        (0.72, 0.1, 0.0, 0.22, 0.16, 0.16, -20),
        (0.78, 0.32, 0.12, 0.03, 0.13, 0.03, -20),
        (0.78, 0.32, -0.12, 0.03, 0.13, 0.03, -20),
        (0.4, -0.42, 0.17, 0.09, 0.22, 0.09, 0),
        (0.4, -0.42, -0.17, 0.09, 0.22, 0.09, 0),
        (-0.4, -0.42, 0.17, 0.09, 0.22, 0.09, 0),
        (-0.4, -0.42, -0.17, 0.09, 0.22, 0.09, 0),
    ],
    "Armadillo": [
        (0.0, 0.0, 0.0, 0.3, 0.4, 0.22, 0),
        (0.0, 0.55, 0.0, 0.18, 0.18, 0.18, 0),
        (-0.22, 0.82, 0.0, 0.06, 0.22, 0.04, 20),
        (0.22, 0.82, 0.0, 0.06, 0.22, 0.04, -20),
        (-0.45, 0.05, 0.0, 0.08, 0.32, 0.08, -25),
        (0.45, 0.05, 0.0, 0.08, 0.32, 0.08, 25),
        (-0.16, -0.62, 0.0, 0.11, 0.32, 0.11, 0),
        (0.16, -0.62, 0.0, 0.11, 0.32, 0.11, 0),
    ],
    "Horse": [
        (0.0, 0.1, 0.0, 0.5, 0.2, 0.2, 0),
        (0.48, 0.4, 0.0, 0.3, 0.1, 0.1, 55),
        (0.72, 0.62, 0.0, 0.24, 0.09, 0.09, -30),
        (-0.62, 0.0, 0.0, 0.28, 0.05, 0.05, 60),
        (0.35, -0.4, 0.1, 0.06, 0.38, 0.06, 0),
        (0.35, -0.4, -0.1, 0.06, 0.38, 0.06, 0),
        (-0.35, -0.4, 0.1, 0.06, 0.38, 0.06, 0),
        (-0.35, -0.4, -0.1, 0.06, 0.38, 0.06, 0),
    ],
    "Head": [
        (0.0, 0.1, 0.0, 0.45, 0.55, 0.5, 0),
        (0.0, 0.05, 0.48, 0.08, 0.16, 0.1, 0),
        (-0.46, 0.1, 0.0, 0.08, 0.16, 0.08, 0),
        (0.46, 0.1, 0.0, 0.08, 0.16, 0.08, 0),
        (0.0, -0.6, 0.0, 0.22, 0.28, 0.22, 0),
    ],
}
_N_PRIM = max(len(p) for p in _SHAPES.values())


def _rot_x(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _rot_y(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rot_z(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _primitive_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: centres (7, P, 3), inverse shape maps (7, P, 3, 3), valid (7, P); padded by copies."""
    centres = np.zeros((len(CLASS_NAMES), _N_PRIM, 3))
    inv = np.zeros((len(CLASS_NAMES), _N_PRIM, 3, 3))
    valid = np.zeros((len(CLASS_NAMES), _N_PRIM), dtype=bool)
    for k, name in enumerate(CLASS_NAMES):
        prims = _SHAPES[name]
        for j in range(_N_PRIM):
            cx, cy, cz, rx, ry, rz, tilt = prims[min(j, len(prims) - 1)]
            centres[k, j] = (cx, cy, cz)
            # ellipsoid = R_tilt diag(r) unit sphere: inverse = diag(1/r) R_tilt^T
            inv[k, j] = np.diag(1 / np.array([rx, ry, rz])) @ _rot_z(np.deg2rad(tilt)).T
            valid[k, j] = j < len(prims)
    return centres, inv, valid


_CENTRES, _INV, _VALID = _primitive_table()


def hue_to_rgb(hue: np.ndarray, sat: float, val: float) -> np.ndarray:
    """HSV -> RGB for hue fractions (any shape, wraps at 1): returns shape (..., 3) in [0, 1]."""
    h = np.mod(np.asarray(hue, dtype=np.float64), 1.0)[..., None] * 6.0
    k = np.mod(np.array([5.0, 3.0, 1.0]) + h, 6.0)
    return val - val * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates u, v (size * size,), row-major from the top-left pixel."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    u, v = np.meshgrid(c, -c)
    return u.ravel(), v.ravel()


def _render_chunk(cls: np.ndarray, z: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render B scenes: cls (B,) int, z (B, 10) latents -> images (B, P, 3), masks (B, P)."""
    u, v = _pixel_grid(size)
    pos_x, pos_y, pos_z, phi, theta, psi, spot, l_hue, b_hue, o_hue = z.T
    scale = 0.45 * 2.0 ** (-0.5 * pos_z)
    rot = _rot_z(np.pi * phi) @ _rot_x(np.pi * theta) @ _rot_y(np.pi * psi)  # (B, 3, 3)
    centre = np.stack([0.5 * pos_x, 0.5 * pos_y, np.zeros_like(pos_x)], -1)
    # world centres (B, K, 3); Minv = inv_local R^T / scale, Q = Minv^T Minv
    c_world = centre[:, None] + scale[:, None, None] * np.einsum("bij,bkj->bki", rot, _CENTRES[cls])
    m_inv = np.einsum("bkij,blj->bkil", _INV[cls], rot) / scale[:, None, None, None]
    q = np.einsum("bkji,bkjl->bkil", m_inv, m_inv)
    dx = u[None, None] - c_world[..., 0:1]  # (B, K, P)
    dy = v[None, None] - c_world[..., 1:2]
    qq = q[..., None]
    a = qq[:, :, 2, 2]
    b = 2 * (qq[:, :, 2, 0] * dx + qq[:, :, 2, 1] * dy)
    c = qq[:, :, 0, 0] * dx**2 + 2 * qq[:, :, 0, 1] * dx * dy + qq[:, :, 1, 1] * dy**2 - 1
    disc = b**2 - 4 * a * c
    hit = (disc > 0) & _VALID[cls][..., None]
    t = (-b + np.sqrt(np.maximum(disc, 0.0))) / (2 * a)  # front intersection, relative to centre
    depth = np.where(hit, c_world[..., 2:3] + t, -np.inf)
    front = np.argmax(depth, axis=1)  # (B, P)
    mask = np.take_along_axis(depth, front[:, None], 1)[:, 0] > -np.inf

    def pick(arr: np.ndarray) -> np.ndarray:
        return np.take_along_axis(arr, front[:, None], 1)[:, 0]

    rel = np.stack([pick(dx), pick(dy), pick(t)], -1)  # (B, P, 3)
    q_front = np.take_along_axis(q, front[:, :, None, None], 1)  # (B, P, 3, 3)
    normal = np.einsum("bpij,bpj->bpi", q_front, rel)
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)

    s = np.pi / 2 * spot
    light_dir = np.stack([np.sin(s), np.cos(s), np.full_like(s, 0.8)], -1)
    light_dir /= np.linalg.norm(light_dir, axis=-1, keepdims=True)
    half = light_dir + np.array([0.0, 0.0, 1.0])
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    light_rgb = 0.5 + 0.5 * hue_to_rgb((l_hue + 1) / 2, 1.0, 1.0)  # (B, 3)
    lambert = np.clip(np.einsum("bpi,bi->bp", normal, light_dir), 0.0, None)
    spec = np.clip(np.einsum("bpi,bi->bp", normal, half), 0.0, None) ** 24
    albedo = hue_to_rgb((o_hue + 1) / 2, 0.8, 0.95)[:, None]
    obj = (
        albedo * (0.2 + 0.85 * lambert[..., None] * light_rgb[:, None])
        + 0.35 * spec[..., None] * light_rgb[:, None]
    )

    floor = (v < HORIZON_V)[None, :, None]
    wall_rgb = hue_to_rgb((b_hue + 1) / 2, 0.5, 0.8)[:, None]
    floor_rgb = hue_to_rgb((b_hue + 1) / 2, 0.5, 0.55)[:, None]
    spot_u, spot_v = 0.8 * np.sin(s), 0.8 * np.cos(s) - 0.4
    r2 = (u[None] - spot_u[:, None]) ** 2 + (v[None] - spot_v[:, None]) ** 2
    glow = np.exp(-r2 / (2 * 0.3**2))[..., None]
    back = np.where(floor, floor_rgb, wall_rgb) * (0.6 + 0.7 * glow * light_rgb[:, None])
    img = np.where(mask[..., None], obj, back)
    return np.clip(img, 0.0, 1.0), mask


def render_scenes(
    cls: np.ndarray, z: np.ndarray, size: int = 64, chunk: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Render scenes: cls (n,) class index 0..6, z (n, 10) latents in ``LATENT_NAMES`` order.

    Returns images (n, size, size, 3) float32 in [0, 1] and object masks (n, size, size) bool.
    """
    n = len(cls)
    images = np.empty((n, size, size, 3), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=bool)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        img, mask = _render_chunk(cls[sl], z[sl].astype(np.float64), size)
        images[sl] = img.reshape(-1, size, size, 3)
        masks[sl] = mask.reshape(-1, size, size)
    return images, masks
