"""Image simulator: Causal3DIdent-like 64x64 RGB scenes with known latents (spec CAUSAL3DIDENT.md).

Static latents follow the spec's causal structure: class ~ U{7}; environment (spotlight position,
spotlight hue, background hue) ~ U(-1, 1) independent; rotation, position and object hue ~ normal
truncated to [-1, 1], sigma 0.5, around class-dependent means (position from the spotlight angle,
object hue from the hues). The class is the perturbation regime: obs["perturbation"] holds the class
name, and "Teapot" (all offsets 0) is the reference class (uns["sim"]["control"]). The temporal
variant moves each latent half-way toward a goal set by its parents plus noise (CITRIS-style).
Rendering (``citevae.sim._render``) is numpy only and deterministic.
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy.stats import truncnorm

from citevae.errors import CiteVAEError
from citevae.sim._mechanisms import check_float, check_int
from citevae.sim._render import CLASS_NAMES, LATENT_NAMES, SCENE_UNITS, render_scenes

IMAGE_SIZE = 64
SIGMA = 0.5
"""Standard deviation of the truncated normals of rotation, position and object hue."""
ROT_MEANS = np.array(
    [
        [-0.35, 0.35, 0.35],
        [0.35, -0.35, 0.35],
        [0.35, 0.35, -0.35],
        [0.35, -0.35, -0.35],
        [-0.35, 0.35, -0.35],
        [-0.35, -0.35, 0.35],
        [-0.35, -0.35, -0.35],
    ]
)
"""Class means of (rot_phi, rot_theta, rot_psi), rows in ``CLASS_NAMES`` order."""
POS_SIGN = np.array([0.0, -1.0, -1.0, 1.0, 1.0, -1.0, 1.0])
"""Position mean = POS_SIGN[class] * (sin s, cos s, 0), s = pi/2 * spot_pos."""
HUE_RULE = ("0", "(b+l)/2", "-(b+l)/2", "-0.35", "0.7", "-0.7", "0.35")
"""Object-hue mean per class; b = background hue, l = spotlight hue (Hare blends, Dragon stands out)."""
HUE_CONST = np.array([0.0, np.nan, np.nan, -0.35, 0.7, -0.7, 0.35])
CONTROL_CLASS = "Teapot"
WRAPPING = ("rot_phi", "rot_theta", "rot_psi", "spot_hue", "bg_hue", "obj_hue")
"""Latents that are angles on a full circle ([-1, 1) wraps); the others are clipped to [-1, 1]."""
TEMPORAL_GOALS = {
    "pos_x": "sin(pi * rot_theta)",
    "pos_y": "sin(pi * rot_phi)",
    "pos_z": "cos(pi * rot_phi)",
    "rot_phi": "bg_hue",
    "rot_theta": "obj_hue",
    "rot_psi": "class mean mu_psi",
    "spot_pos": "clip(atan2(pos_x, pos_y) / (pi/2), -1, 1)",
    "spot_hue": "-bg_hue (2 pi - background hue, wrapped)",
    "bg_hue": "bg_hue itself (a wrapped random walk)",
    "obj_hue": "class object-hue mean (HUE_RULE) of the current bg_hue and spot_hue",
}
"""Goal of each latent in the temporal variant (latent units, parents at the previous step)."""
NOISE_SD = np.array([0.1, 0.1, 0.1, 0.15, 0.15, 0.15, 0.15, 0.15, 0.15, 0.15])
"""Temporal noise sd per latent (latent units): 0.1 for positions, 0.15 for angles and hues."""


def _truncnorm(mean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Normal(mean, SIGMA) truncated to [-1, 1], elementwise."""
    mean = np.asarray(mean, dtype=np.float64)
    a, b = (-1 - mean) / SIGMA, (1 - mean) / SIGMA
    return truncnorm.rvs(a, b, loc=mean, scale=SIGMA, size=mean.shape, random_state=rng)


def _wrap(x: np.ndarray) -> np.ndarray:
    """Map to [-1, 1) on the circle of circumference 2."""
    return np.mod(x + 1.0, 2.0) - 1.0


def object_hue_mean(cls: np.ndarray, bg_hue: np.ndarray, spot_hue: np.ndarray) -> np.ndarray:
    """Class-dependent mean of the object hue (spec table), shape of ``cls``."""
    mean = HUE_CONST[cls].copy()
    blend = (bg_hue + spot_hue) / 2
    mean = np.where(cls == 1, blend, mean)
    return np.where(cls == 2, -blend, mean)


def position_mean(cls: np.ndarray, spot_pos: np.ndarray) -> np.ndarray:
    """Class-dependent mean of (pos_x, pos_y, pos_z) from the spotlight angle: shape (n, 3)."""
    s = np.pi / 2 * spot_pos
    sign = POS_SIGN[cls]
    return np.stack([sign * np.sin(s), sign * np.cos(s), np.zeros_like(s)], -1)


def sample_causal3dident_latents(n: int, seed: int = 0) -> pd.DataFrame:
    """Draw n scenes' latents from the spec's static causal structure.

    Returns a DataFrame (n rows) with "class" (int 0..6), "class_name" (categorical, ``CLASS_NAMES``)
    and the continuous latents ``LATENT_NAMES`` in [-1, 1] (float64).
    """
    n = check_int("n", n, 1)
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, len(CLASS_NAMES), n)
    spot_pos, spot_hue, bg_hue = rng.uniform(-1, 1, (3, n))
    rot = _truncnorm(ROT_MEANS[cls], rng)
    pos = _truncnorm(position_mean(cls, spot_pos), rng)
    obj_hue = _truncnorm(object_hue_mean(cls, bg_hue, spot_hue), rng)
    z = np.column_stack([pos, rot, spot_pos, spot_hue, bg_hue, obj_hue])
    df = pd.DataFrame(z, columns=list(LATENT_NAMES))
    df.insert(0, "class", cls)
    df.insert(1, "class_name", pd.Categorical.from_codes(cls, categories=list(CLASS_NAMES)))
    return df


def _split(latents: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class (n,) int, z (n, 10)) from a latent DataFrame or an (n, 11) array [class, *LATENT_NAMES]."""
    if isinstance(latents, pd.DataFrame):
        missing = [c for c in ("class", *LATENT_NAMES) if c not in latents.columns]
        if missing:
            raise CiteVAEError(
                f"latents lack columns {missing}; pass the output of sample_causal3dident_latents"
            )
        cls = latents["class"].to_numpy()
        z = latents[list(LATENT_NAMES)].to_numpy(dtype=np.float64)
    else:
        arr = np.asarray(latents, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 1 + len(LATENT_NAMES):
            raise CiteVAEError(
                f"latents array must have shape (n, {1 + len(LATENT_NAMES)}) "
                f"(class, {', '.join(LATENT_NAMES)}), got {arr.shape}"
            )
        cls, z = arr[:, 0], arr[:, 1:]
    if not np.all(np.isfinite(z)):
        raise CiteVAEError("latents contain NaN or infinite values; all latents must be finite")
    if np.any(cls != np.round(cls)) or np.any((cls < 0) | (cls >= len(CLASS_NAMES))):
        raise CiteVAEError(f"latent 'class' must be an integer in 0..{len(CLASS_NAMES) - 1}")
    return cls.astype(np.int64), z


def render(
    latents: pd.DataFrame | np.ndarray, *, return_mask: bool = False, size: int = IMAGE_SIZE
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render scenes deterministically: latents (n rows) -> images (n, size, size, 3) float32 in [0, 1].

    ``latents``: DataFrame with "class" and ``LATENT_NAMES`` columns, or an (n, 11) array in the
    order (class, *LATENT_NAMES). With ``return_mask`` also returns object masks (n, size, size)
    bool. ``size`` (pixels, >= 8) defaults to the spec's 64; the scene is the same at any size.
    """
    size = check_int("size", size, 8)
    cls, z = _split(latents)
    images, masks = render_scenes(cls, z, size)
    return (images, masks) if return_mask else images


def temporal_goals(cls: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Goals of every latent given the previous state: cls (n,), z (n, 10) -> (n, 10) latent units."""
    pos_x, pos_y, _, phi, theta, _, _, spot_hue, bg_hue, obj_hue = z.T
    goal = np.empty_like(z)
    goal[:, 0] = np.sin(np.pi * theta)
    goal[:, 1] = np.sin(np.pi * phi)
    goal[:, 2] = np.cos(np.pi * phi)
    goal[:, 3] = bg_hue
    goal[:, 4] = obj_hue
    goal[:, 5] = ROT_MEANS[cls, 2]
    goal[:, 6] = np.clip(np.arctan2(pos_x, pos_y) / (np.pi / 2), -1, 1)
    goal[:, 7] = _wrap(-bg_hue)
    goal[:, 8] = bg_hue
    goal[:, 9] = _wrap(object_hue_mean(cls, bg_hue, spot_hue))
    return goal


def temporal_step(
    cls: np.ndarray,
    z: np.ndarray,
    noise: np.ndarray,
    targets: np.ndarray | None = None,
    uniform: np.ndarray | None = None,
) -> np.ndarray:
    """One step: next = current + (goal - current) / 2 + noise (wrapping latents on the circle).

    Intervened entries (``targets`` (n, 10) bool) take the value of ``uniform`` (n, 10) instead.
    """
    wrap = np.array([name in WRAPPING for name in LATENT_NAMES])
    diff = temporal_goals(cls, z) - z
    diff = np.where(wrap, _wrap(diff), diff)  # shortest way round the circle
    nxt = z + diff / 2 + noise
    nxt = np.where(wrap, _wrap(nxt), np.clip(nxt, -1, 1))
    if targets is not None and uniform is not None:
        nxt = np.where(targets, uniform, nxt)
    return nxt


def simulate_images(
    n: int = 1000,
    seed: int = 0,
    temporal: bool = False,
    n_steps: int = 4,
    intervention_prob: float = 0.0,
    image_size: int = IMAGE_SIZE,
) -> ad.AnnData:
    """Simulate Causal3DIdent-like scenes with ground-truth latents as AnnData.

    Args:
        n: number of scenes (static) or of individuals, each a sequence of n_steps + 1 frames.
        seed: seed of ``np.random.default_rng``.
        temporal: whether to simulate sequences (frame 0 from the static sampler, then
            ``temporal_step`` with noise sd ``NOISE_SD``).
        n_steps: steps after frame 0 in the temporal variant (>= 1).
        intervention_prob: temporal only; per step and latent, probability that the latent is
            intervened on (replaced by U(-1, 1)); the targets go to obsm["intervention_targets"].
        image_size: side S of the images in pixels (>= 8); 64 as in the spec, smaller (e.g. 32) for
            quick CPU runs.

    Returns:
        AnnData, X float32 (rows, S * S * 3) flattened (H, W, RGB) pixels in [0, 1]; rows =
        n (static) or n * (n_steps + 1) (temporal, individual-major). obs: "perturbation"
        (categorical class name; "Teapot" is the reference class), "class" (int); temporal adds
        "individual" (categorical str) and "time" (int). obsm: "z_true" (rows, 10) float64 in
        ``LATENT_NAMES`` order; temporal adds "intervention_targets" (rows, 10) bool (all False at
        t = 0). uns["sim"]: "kind" = "images", factor names and scene units, class table (rotation
        means, position signs, hue rules), image shape, "control", "scale" = "continuous", arguments.
    """
    n = check_int("n", n, 1)
    T = check_int("n_steps", n_steps, 1)
    image_size = check_int("image_size", image_size, 8)
    p_int = check_float("intervention_prob", intervention_prob)
    if p_int > 1:
        raise CiteVAEError(f"intervention_prob must be in [0, 1], got {intervention_prob!r}")
    rng = np.random.default_rng(seed)
    first = sample_causal3dident_latents(n, seed=int(rng.integers(2**31)))
    cls, z0 = _split(first)
    d = len(LATENT_NAMES)
    if temporal:
        zs, tg = [z0], [np.zeros((n, d), dtype=bool)]
        for _ in range(T):
            noise = rng.standard_normal((n, d)) * NOISE_SD
            targets = rng.random((n, d)) < p_int
            uniform = rng.uniform(-1, 1, (n, d))
            zs.append(temporal_step(cls, zs[-1], noise, targets, uniform))
            tg.append(targets)
        z_true = np.stack(zs, 1).reshape(-1, d)  # (n, T+1, d) -> individual-major rows
        targets_all = np.stack(tg, 1).reshape(-1, d)
        cls_rows = np.repeat(cls, T + 1)
    else:
        z_true, cls_rows = z0, cls
    images = render(np.column_stack([cls_rows, z_true]), size=image_size)
    obs = pd.DataFrame(
        {
            "perturbation": pd.Categorical.from_codes(cls_rows, categories=list(CLASS_NAMES)),
            "class": cls_rows,
        }
    )
    if temporal:
        width = len(str(n - 1))
        obs["individual"] = pd.Categorical([f"ind{i:0{width}d}" for i in np.repeat(np.arange(n), T + 1)])
        obs["time"] = np.tile(np.arange(T + 1), n)
    obs.index = [f"img{i}" for i in range(len(obs))]
    h, w, c = image_size, image_size, 3
    var = pd.DataFrame(index=[f"px{i}_{j}_{ch}" for i in range(h) for j in range(w) for ch in "rgb"])
    adata = ad.AnnData(X=images.reshape(len(obs), -1), obs=obs, var=var)
    adata.obsm["z_true"] = z_true
    sim: dict[str, Any] = {
        "kind": "images",
        "latent_names": np.array(LATENT_NAMES),
        "latent_units": dict(SCENE_UNITS),
        "wrapping_latents": np.array(WRAPPING),
        "class_names": np.array(CLASS_NAMES),
        "control": CONTROL_CLASS,
        "rot_means": ROT_MEANS,
        "pos_sign": POS_SIGN,
        "obj_hue_rule": np.array(HUE_RULE),
        "sigma": SIGMA,
        "image_shape": np.array([h, w, c]),
        "scale": "continuous",
        "n": n,
        "seed": int(seed),
        "temporal": bool(temporal),
    }
    if temporal:
        adata.obsm["intervention_targets"] = targets_all
        sim.update(
            n_steps=T,
            intervention_prob=p_int,
            noise_sd=NOISE_SD,
            temporal_goals=dict(TEMPORAL_GOALS),
        )
    adata.uns["sim"] = sim
    return adata
