"""Tests of the image simulator: determinism, spec latents, one-factor effects, temporal goals, h5ad."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy.stats import truncnorm

from citevae.errors import CiteVAEError
from citevae.sim import render, sample_causal3dident_latents, simulate_images
from citevae.sim._render import CLASS_NAMES, LATENT_NAMES
from citevae.sim.images import (
    NOISE_SD,
    ROT_MEANS,
    SIGMA,
    WRAPPING,
    object_hue_mean,
    position_mean,
    temporal_goals,
    temporal_step,
)

IDX = {name: i for i, name in enumerate(LATENT_NAMES)}
WRAP = np.array([n in WRAPPING for n in LATENT_NAMES])
BASE = np.array([0.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.0, 0.2, -0.4, 0.5])


def _tn_mean(mu: np.ndarray) -> np.ndarray:
    return truncnorm.mean((-1 - mu) / SIGMA, (1 - mu) / SIGMA, loc=mu, scale=SIGMA)


def _scene(cls: int = 0, **changes: float) -> tuple[np.ndarray, np.ndarray]:
    z = BASE.copy()
    for k, v in changes.items():
        z[IDX[k]] = v
    img, mask = render(np.concatenate([[cls], z])[None], return_mask=True)
    return img[0], mask[0]


def _centroid(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([rows.mean(), cols.mean()])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def latents() -> pd.DataFrame:
    return sample_causal3dident_latents(6000, seed=0)


def test_deterministic_per_seed() -> None:
    a, b = sample_causal3dident_latents(50, seed=3), sample_causal3dident_latents(50, seed=3)
    pd.testing.assert_frame_equal(a, b)
    other = sample_causal3dident_latents(50, seed=4)
    assert not np.allclose(a[list(LATENT_NAMES)], other[list(LATENT_NAMES)])
    x1, x2 = simulate_images(12, seed=5), simulate_images(12, seed=5)
    assert np.array_equal(x1.X, x2.X) and np.array_equal(x1.obsm["z_true"], x2.obsm["z_true"])
    assert not np.array_equal(x1.X, simulate_images(12, seed=6).X)
    assert np.array_equal(render(a), render(a))  # rendering itself draws nothing


def test_render_output(latents: pd.DataFrame) -> None:
    img, mask = render(latents.iloc[:20], return_mask=True)
    assert img.shape == (20, 64, 64, 3) and img.dtype == np.float32
    assert img.min() >= 0 and img.max() <= 1
    assert mask.shape == (20, 64, 64) and mask.dtype == bool and mask.any(axis=(1, 2)).all()
    arr = np.column_stack([latents["class"], latents[list(LATENT_NAMES)]])[:20]
    assert np.array_equal(render(arr), img)


def test_bad_latents_raise() -> None:
    with pytest.raises(CiteVAEError, match="shape"):
        render(np.zeros((3, 5)))
    bad = np.zeros((1, 11))
    bad[0, 0] = 7
    with pytest.raises(CiteVAEError, match="class"):
        render(bad)
    with pytest.raises(CiteVAEError, match="lack columns"):
        render(pd.DataFrame({"class": [0]}))


def test_environment_uniform_and_independent(latents: pd.DataFrame) -> None:
    env = latents[["spot_pos", "spot_hue", "bg_hue"]].to_numpy()
    assert env.min() >= -1 and env.max() <= 1
    assert np.allclose(env.mean(0), 0, atol=0.05) and np.allclose(env.var(0), 1 / 3, atol=0.03)
    corr = np.corrcoef(np.column_stack([env, latents["class"]]).T)
    assert np.abs(corr[np.triu_indices(4, 1)]).max() < 0.05
    counts = np.bincount(latents["class"], minlength=7)
    assert counts.min() > 6000 / 7 * 0.85


def test_rotation_class_means(latents: pd.DataFrame) -> None:
    rot = latents[["rot_phi", "rot_theta", "rot_psi"]].to_numpy()
    assert rot.min() >= -1 and rot.max() <= 1
    for k in range(7):
        got = rot[latents["class"] == k].mean(0)
        assert np.allclose(got, _tn_mean(ROT_MEANS[k]), atol=0.06), CLASS_NAMES[k]
        assert np.all(np.sign(got) == np.sign(ROT_MEANS[k]))


def test_position_follows_class_formula(latents: pd.DataFrame) -> None:
    cls, s = latents["class"].to_numpy(), latents["spot_pos"].to_numpy()
    pos = latents[["pos_x", "pos_y", "pos_z"]].to_numpy()
    expected = _tn_mean(position_mean(cls, s))
    for k in range(7):
        sel = cls == k
        assert np.allclose((pos[sel] - expected[sel]).mean(0), 0, atol=0.05), CLASS_NAMES[k]
    sign = {0: 0, 1: -1, 2: -1, 3: 1, 4: 1, 5: -1, 6: 1}
    for k, sg in sign.items():
        sel = cls == k
        r = np.corrcoef(pos[sel, 0], np.sin(np.pi / 2 * s[sel]))[0, 1]
        assert (r > 0.5) if sg > 0 else (r < -0.5) if sg < 0 else abs(r) < 0.1, CLASS_NAMES[k]
        assert abs(np.corrcoef(pos[sel, 2], s[sel])[0, 1]) < 0.1  # depth ignores the spotlight


def test_object_hue_follows_class_formula(latents: pd.DataFrame) -> None:
    cls = latents["class"].to_numpy()
    b, l_, h = (latents[c].to_numpy() for c in ("bg_hue", "spot_hue", "obj_hue"))
    expected = _tn_mean(object_hue_mean(cls, b, l_))
    for k in range(7):
        sel = cls == k
        assert abs((h[sel] - expected[sel]).mean()) < 0.04, CLASS_NAMES[k]
    assert np.corrcoef(h[cls == 1], (b + l_)[cls == 1])[0, 1] > 0.4  # Hare blends in
    assert np.corrcoef(h[cls == 2], (b + l_)[cls == 2])[0, 1] < -0.4  # Dragon stands out
    for k in (0, 3, 4, 5, 6):
        assert abs(np.corrcoef(h[cls == k], b[cls == k])[0, 1]) < 0.1


def test_hues_change_only_their_region() -> None:
    img0, m0 = _scene()
    img_b, m_b = _scene(bg_hue=0.3)
    assert np.array_equal(m0, m_b)
    assert np.array_equal(img0[m0], img_b[m0])  # the object is untouched
    assert np.abs(img0[~m0] - img_b[~m0]).mean() > 0.05
    img_o, m_o = _scene(obj_hue=-0.3)
    assert np.array_equal(m0, m_o)
    assert np.array_equal(img0[~m0], img_o[~m0])  # the background is untouched
    assert np.abs(img0[m0] - img_o[m0]).mean() > 0.05
    img_l, m_l = _scene(spot_hue=-0.6)  # the light tints both
    assert np.array_equal(m0, m_l)
    assert np.abs(img0[~m0] - img_l[~m0]).mean() > 0.01
    assert np.abs(img0[m0] - img_l[m0]).mean() > 0.01


def test_position_and_depth_move_and_scale_the_object() -> None:
    _, m0 = _scene()
    _, m_x = _scene(pos_x=0.5)
    _, m_y = _scene(pos_y=0.5)
    dx, dy = _centroid(m_x) - _centroid(m0), _centroid(m_y) - _centroid(m0)
    assert dx[1] > 5 and abs(dx[0]) < 1  # right by about 0.25 * 32 = 8 pixels
    assert dy[0] < -5 and abs(dy[1]) < 1  # up (smaller row index)
    areas = [_scene(pos_z=z)[1].sum() for z in (-0.8, 0.0, 0.8)]
    assert areas[0] > 1.3 * areas[1] > 1.3**2 * areas[2]
    assert np.abs(_centroid(_scene(pos_z=0.8)[1]) - _centroid(m0)).max() < 3


@pytest.mark.parametrize("factor", ["rot_phi", "rot_theta", "rot_psi"])
def test_rotation_changes_the_silhouette(factor: str) -> None:
    _, m0 = _scene(cls=1)
    _, m1 = _scene(cls=1, **{factor: 0.5})
    assert _iou(m0, m1) < 0.8


def test_spotlight_position_moves_the_light() -> None:
    img_l, m_l = _scene(spot_pos=-0.8)
    img_r, m_r = _scene(spot_pos=0.8)
    assert np.array_equal(m_l, m_r)
    cols = np.broadcast_to(np.arange(64)[None], (64, 64))

    def bright_col(img: np.ndarray, region: np.ndarray) -> float:
        w = img.sum(-1)[region]
        w = np.clip(w - np.quantile(w, 0.5), 0, None)
        return float((w * cols[region]).sum() / w.sum())

    assert bright_col(img_r, ~m_r) - bright_col(img_l, ~m_l) > 15  # spot on the backdrop
    assert bright_col(img_r, m_r) - bright_col(img_l, m_l) > 2  # shading gradient on the object


def test_seven_classes_have_distinct_silhouettes() -> None:
    z = np.zeros((7, 10))
    _, masks = render(np.column_stack([np.arange(7), z]), return_mask=True)
    assert (masks.sum((1, 2)) > 100).all()  # 137..244 pixels of 4096
    for i in range(7):
        for j in range(i + 1, 7):
            assert _iou(masks[i], masks[j]) < 0.8, (CLASS_NAMES[i], CLASS_NAMES[j])


def test_temporal_step_halves_distance_without_noise(latents: pd.DataFrame) -> None:
    cls = latents["class"].to_numpy()[:200]
    z = latents[list(LATENT_NAMES)].to_numpy()[:200]
    goal = temporal_goals(cls, z)
    nxt = temporal_step(cls, z, np.zeros_like(z))
    wrap = WRAP
    d0, d1 = goal - z, goal - nxt
    d0 = np.where(wrap, np.mod(d0 + 1, 2) - 1, d0)
    d1 = np.where(wrap, np.mod(d1 + 1, 2) - 1, d1)
    assert np.allclose(np.abs(d1), np.abs(d0) / 2, atol=1e-9)


def test_temporal_sequences_move_toward_goals() -> None:
    a = simulate_images(300, seed=2, temporal=True, n_steps=2)
    T = 2
    assert a.n_obs == 300 * (T + 1)
    assert (a.obs["time"].to_numpy() == np.tile(np.arange(T + 1), 300)).all()
    assert a.obs.groupby("individual", observed=True)["class"].nunique().max() == 1
    assert not a.obsm["intervention_targets"].any()
    z = a.obsm["z_true"].reshape(300, T + 1, -1)
    cls = a.obs["class"].to_numpy()[:: T + 1]
    wrap = WRAP
    moving = np.array([n != "bg_hue" for n in LATENT_NAMES])  # bg_hue's goal is itself
    for t in range(T):
        goal = temporal_goals(cls, z[:, t])
        d0, d1 = goal - z[:, t], goal - z[:, t + 1]
        d0 = np.abs(np.where(wrap, np.mod(d0 + 1, 2) - 1, d0))
        d1 = np.abs(np.where(wrap, np.mod(d1 + 1, 2) - 1, d1))
        assert d1[:, moving].mean() < 0.8 * d0[:, moving].mean()
        step = z[:, t + 1, IDX["bg_hue"]] - z[:, t, IDX["bg_hue"]]
        assert np.std(np.mod(step + 1, 2) - 1) == pytest.approx(NOISE_SD[IDX["bg_hue"]], rel=0.2)
    assert np.abs(a.obsm["z_true"]).max() <= 1


def test_temporal_interventions() -> None:
    a = simulate_images(40, seed=1, temporal=True, n_steps=2, intervention_prob=1.0)
    targets = a.obsm["intervention_targets"].reshape(40, 3, -1)
    assert not targets[:, 0].any() and targets[:, 1:].all()
    z = a.obsm["z_true"].reshape(40, 3, -1)
    assert np.abs(np.corrcoef(z[:, 1, 0], z[:, 2, 0])[0, 1]) < 0.5  # fresh uniform draws
    with pytest.raises(CiteVAEError, match="intervention_prob"):
        simulate_images(2, temporal=True, intervention_prob=1.5)


def test_anndata_layout_and_h5ad_round_trip(tmp_path) -> None:
    a = simulate_images(30, seed=4)
    assert a.shape == (30, 64 * 64 * 3) and a.X.dtype == np.float32 and isinstance(a.X, np.ndarray)
    assert list(a.obs.columns) == ["perturbation", "class"]
    assert list(a.obs["perturbation"].cat.categories) == list(CLASS_NAMES)
    assert (a.obs["perturbation"].cat.codes.to_numpy() == a.obs["class"].to_numpy()).all()
    assert a.obsm["z_true"].shape == (30, 10)
    sim = a.uns["sim"]
    assert sim["kind"] == "images" and sim["control"] == "Teapot" and sim["scale"] == "continuous"
    assert list(sim["latent_names"]) == list(LATENT_NAMES) and list(sim["image_shape"]) == [64, 64, 3]
    img = render(np.column_stack([a.obs["class"], a.obsm["z_true"]]))
    assert np.array_equal(a.X.reshape(30, 64, 64, 3), img)
    path = tmp_path / "images.h5ad"
    a.write_h5ad(path)
    b = ad.read_h5ad(path)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.obsm["z_true"], b.obsm["z_true"])
    assert b.uns["sim"]["control"] == "Teapot"
    assert np.array_equal(b.uns["sim"]["rot_means"], ROT_MEANS)
    t = simulate_images(5, seed=0, temporal=True, n_steps=1)
    t.write_h5ad(tmp_path / "t.h5ad")
    tb = ad.read_h5ad(tmp_path / "t.h5ad")
    assert list(tb.obs.columns) == ["perturbation", "class", "individual", "time"]
    assert np.array_equal(tb.obsm["intervention_targets"], t.obsm["intervention_targets"])


@pytest.mark.parametrize("factor", LATENT_NAMES)
def test_each_factor_changes_pixels_only_where_expected(factor: str) -> None:
    """One factor at a time: pixels change, geometry only within the old and new silhouettes,
    background hue only off the object, object hue only on it, the light everywhere."""
    img0, m0 = _scene(cls=1)
    img1, m1 = _scene(cls=1, **{factor: BASE[IDX[factor]] + 0.4})
    changed = np.abs(img1 - img0).max(-1) > 1e-6
    assert changed.sum() >= 20, factor
    if factor.startswith(("pos_", "rot_")):
        assert not changed[~(m0 | m1)].any()  # the backdrop is untouched
    elif factor == "bg_hue":
        assert not changed[m0].any()
    elif factor == "obj_hue":
        assert not changed[~m0].any()
    else:  # the spotlight lights the object and the backdrop
        assert changed[m0].any() and changed[~m0].any()


def test_image_size_option() -> None:
    small = simulate_images(6, seed=3, image_size=32)
    assert small.shape == (6, 32 * 32 * 3) and list(small.uns["sim"]["image_shape"]) == [32, 32, 3]
    assert np.array_equal(small.obsm["z_true"], simulate_images(6, seed=3).obsm["z_true"])
    latents = np.column_stack([small.obs["class"], small.obsm["z_true"]])
    assert np.array_equal(small.X.reshape(6, 32, 32, 3), render(latents, size=32))
    big = render(latents, size=64).reshape(6, 32, 2, 32, 2, 3).mean((2, 4))
    assert np.abs(big - small.X.reshape(6, 32, 32, 3)).mean() < 0.05  # the same scene, coarser
    with pytest.raises(CiteVAEError, match="image_size"):
        simulate_images(2, image_size=4)
