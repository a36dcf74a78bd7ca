"""The recipe losses: a structural term, MAE, and an optional colour-cast remedy term.

Per image ``[H, W, C]`` in [0, 1]::

  loss = w_s * D(x, y) + w_m * MAE(x, y) + w_r * R(x, y)

- ``D = 1 - S``, S one of: ``ssim`` (11-tap Gaussian, sigma 1.5, valid: the `seed-naive`
  preset's term), ``multi_sigma`` (Zhao et al.'s full-resolution multi-sigma MS-SSIM, sigmas
  0.5..8 in a 31-tap window), ``ms_ssim3`` (the pyramid MS-SSIM of Wang et al. 2003 with its
  first three scales, power factors renormalised: the five-scale one needs 161-pixel patches
  for an 11-tap window, a 48-pixel patch allows three).
- R, the remedy (``None``: none):

  - ``mean``: ``mean_c |mu_c(x) - mu_c(y)|``, the L1 distance of the per-channel means of the
    patch. Its derivative with respect to a uniform offset delta of a channel is
    ``sign(delta) / C``, whatever the size of delta: a restoring force that does not vanish.
  - ``smooth_mean``: ``mean_c (sqrt(d_c^2 + eps^2) - eps)``, d_c = mu_c(x) - mu_c(y), eps =
    one 8-bit level (Charbonnier). Like ``mean`` above one level, but its gradient goes to 0
    smoothly at d = 0: the L1 form's gradient keeps a norm of about the same size at any
    nonzero offset, so it never settles and, under global-norm gradient clipping, shrinks the
    other terms' steps (`gradient_norms_at_init`).
  - ``lowpass``: MAE between the two images blurred by a Gaussian of sigma 4 (local means).
  - ``chroma``: MAE on the BT.601 chroma channels Cb, Cr (colour errors only).

Everything is built from the public `dssim_mae_jax.ssim`, `ms_ssim`, `multi_sigma_ssim` and
`mae`; the weights are traced values, so one compiled step serves every phase.

References:
  Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility to
  structural similarity", IEEE TIP 13(4), 2004 (SSIM, its luminance factor l).
  Wang, Simoncelli, Bovik, "Multi-scale structural similarity for image quality assessment",
  Asilomar 2003 (MS-SSIM and its power factors).
  Zhao, Gallo, Frosio, Kautz, "Loss Functions for Image Restoration with Neural Networks",
  IEEE TCI 2017, arXiv:1511.08861 (multi-sigma MS-SSIM, Mix with alpha 0.84).
  Kerbl et al., "3D Gaussian Splatting for Real-Time Radiance Field Rendering", ACM TOG 2023
  (L1 and D-SSIM weighted 0.8 : 0.2).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

import dssim_mae_jax as dmj

STRUCTURES = ("ssim", "multi_sigma", "ms_ssim3")
REMEDIES = (None, "mean", "smooth_mean", "lowpass", "chroma")
SMOOTH_EPS = 1.0 / 255.0  # smooth_mean: quadratic below one 8-bit level, L1 above
MS3_POWERS = tuple(
    float(p) for p in np.asarray(dmj.MS_SSIM_WEIGHTS[:3]) / sum(dmj.MS_SSIM_WEIGHTS[:3])
)
LOWPASS_SIGMA = 4.0
# BT.601 (full range) chroma rows of the RGB -> YCbCr matrix.
_CHROMA = np.asarray([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32)


def similarity(x: jax.Array, y: jax.Array, structure: str) -> jax.Array:
    """S(x, y) of one image pair [H, W, C] in [0, 1] (scalar)."""
    if structure == "ssim":
        return dmj.ssim(x, y, max_val=1.0)
    if structure == "multi_sigma":
        return dmj.multi_sigma_ssim(x, y, max_val=1.0)
    if structure == "ms_ssim3":
        return dmj.ms_ssim(x, y, max_val=1.0, power_factors=MS3_POWERS)
    raise ValueError(f"structure: got {structure!r}, expected one of {STRUCTURES}")


def _gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
    radius = round(3 * sigma)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    g = jnp.asarray(g / g.sum(), x.dtype)
    # Separable "valid" convolution over H and W of [H, W, C].
    x = jax.vmap(lambda col: jnp.convolve(col, g, mode="valid"), in_axes=1, out_axes=1)(x)
    return jax.vmap(lambda row: jnp.convolve(row, g, mode="valid"), in_axes=0, out_axes=0)(x)


def remedy_term(x: jax.Array, y: jax.Array, remedy: str) -> jax.Array:
    """R(x, y) of one image pair [H, W, C] (scalar); see the module docstring."""
    if remedy == "mean":
        return jnp.mean(jnp.abs(jnp.mean(x, axis=(0, 1)) - jnp.mean(y, axis=(0, 1))))
    if remedy == "smooth_mean":
        d = jnp.mean(x, axis=(0, 1)) - jnp.mean(y, axis=(0, 1))
        return jnp.mean(jnp.sqrt(d * d + SMOOTH_EPS**2) - SMOOTH_EPS)
    if remedy == "lowpass":
        blur = jax.vmap(lambda c: _gaussian_blur(c, LOWPASS_SIGMA), in_axes=-1, out_axes=-1)
        return dmj.mae(blur(x), blur(y), max_val=1.0)
    if remedy == "chroma":
        m = jnp.asarray(_CHROMA)
        return dmj.mae(x @ m.T, y @ m.T, max_val=1.0)
    raise ValueError(f"remedy: got {remedy!r}, expected one of {REMEDIES[1:]}")


def recipe_loss(
    x: jax.Array,
    y: jax.Array,
    *,
    weights: Mapping[str, jax.Array],
    structure: str = "ssim",
    remedy: str | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(loss, aux)`` of one image pair; `weights` has ``structural``, ``mae``, ``remedy``.

    Examples:
      >>> x = jnp.full((16, 16, 3), 0.5); y = x + 0.01
      >>> w = {"structural": 0.0, "mae": 1.0, "remedy": 1.0}
      >>> loss, aux = recipe_loss(x, y, weights=w, remedy="mean")
      >>> round(float(aux["remedy"]), 4), round(float(loss), 4)
      (0.01, 0.02)
    """
    d = 1.0 - similarity(x, y, structure)
    m = dmj.mae(x, y, max_val=1.0)
    aux = {"structural": d, "mae": m}
    loss = weights["structural"] * d + weights["mae"] * m
    if remedy is not None:
        r = remedy_term(x, y, remedy)
        aux["remedy"] = r
        loss = loss + weights["remedy"] * r
    return loss, aux


def luminance_check(*, mu: float = 0.5, deltas=(1, 2, 5, 10, 20), seed: int = 0) -> list[dict]:
    """Numerical check of why SSIM leaves a colour cast, on a textured image of mean `mu`.

    For a clean image y (uniform noise of std 0.1 around `mu`, 64x64x1) and x = y + delta
    (delta in 8-bit levels): the measured ``1 - SSIM(x, y)``, the prediction of SSIM's
    luminance factor alone, ``1 - l ~ delta^2 / (2 mu^2 + C1)``, its derivative with respect to
    delta (autodiff), the derivative of MAE (1 for any delta > 0), and the sum over pixels of
    d(1 - SSIM)/dx at delta = 0 of a *restored* image with a structural error (how much the
    structural gradient moves the mean by itself).
    """
    rng = np.random.default_rng(seed)
    y = jnp.asarray(np.clip(mu + 0.1 * rng.standard_normal((64, 64, 1)), 0, 1), jnp.float32)
    c1 = (0.01 * 1.0) ** 2
    d_of = lambda dl: 1.0 - dmj.ssim(y + dl, y, max_val=1.0)
    grad = jax.grad(d_of)
    rows = []
    for lv in deltas:
        dl = lv / 255.0
        mean_y = float(jnp.mean(y))
        rows.append(
            {
                "levels": lv,
                "one_minus_ssim": float(d_of(dl)),
                "predicted": dl**2 / (2 * mean_y**2 + c1),
                "d_dssim_d_delta": float(grad(dl)),
                "d_mae_d_delta": float(jax.grad(lambda t: dmj.mae(y + t, y, max_val=1.0))(dl)),
                "d_mean_term_d_delta": float(jax.grad(lambda t: remedy_term(y + t, y, "mean"))(dl)),
            }
        )
    return rows


def structural_gradient_drift(*, seed: int = 0) -> dict:
    """Per-channel sums of the pixel gradients of ``1 - SSIM`` and of MAE at a noisy restoration.

    A gradient whose sum over pixels is zero moves no channel mean to first order. Returns the
    sums for x = y + e, e a zero-mean structural error (std 0.05), and for x = y + e + 4 levels.
    """
    rng = np.random.default_rng(seed)
    y = jnp.asarray(np.clip(0.5 + 0.15 * rng.standard_normal((48, 48, 3)), 0, 1), jnp.float32)
    e = jnp.asarray(0.05 * rng.standard_normal((48, 48, 3)), jnp.float32)
    out = {}
    for name, off in (("no offset", 0.0), ("offset 4 levels", 4 / 255)):
        x = y + e + off
        gs = jax.grad(lambda t: 1.0 - dmj.ssim(t, y, max_val=1.0))(x)
        gm = jax.grad(lambda t: dmj.mae(t, y, max_val=1.0))(x)
        out[name] = {
            "dssim_sum": [float(v) for v in jnp.sum(gs, axis=(0, 1))],
            "dssim_abs_sum": [float(v) for v in jnp.sum(jnp.abs(gs), axis=(0, 1))],
            "mae_sum": [float(v) for v in jnp.sum(gm, axis=(0, 1))],
        }
    return out


def gradient_norms_at_init(*, seed: int = 1, remedies=("mean", "smooth_mean")) -> dict:
    """Global norm of the parameter gradient of each loss term alone, for `train.py`'s default
    model at initialisation on its first batch (seed `seed`): MAE, 1 - SSIM and each remedy
    in `remedies`. Gradient clipping (`train.py`: global norm 1) scales a step
    by ``min(1, 1/norm)``."""
    import optax

    from dssim_mae_jax import training

    # optax.tree.norm where it exists (optax.global_norm is deprecated in favour of it)
    norm = getattr(getattr(optax, "tree", None), "norm", None) or optax.global_norm
    config = training.Config(seed=seed)
    data = training.load_dataset(config)
    tx, _ = training.make_optimizer(config)
    state = training.create_train_state(config, tx)
    clean = jnp.asarray(
        training.sample_batch(data.train, seed=seed, step=0, batch_size=16, patch_size=48)
    )
    key = jax.random.PRNGKey(seed)
    noisy = clean + config.noise_sigma / 255.0 * jax.random.normal(key, clean.shape)
    terms = {"mae": {"mae": 1.0}, "1 - ssim": {"structural": 1.0}}
    terms.update({r: {"remedy": 1.0} for r in remedies})
    out = {}
    for name, w in terms.items():
        weights = {"structural": 0.0, "mae": 0.0, "remedy": 0.0, **w}
        remedy = name if name in remedies else None

        def objective(params, weights=weights, remedy=remedy):
            pred = state.apply_fn(params, noisy)
            loss = jax.vmap(lambda a, b: recipe_loss(a, b, weights=weights, remedy=remedy)[0])
            return jnp.mean(loss(pred, clean))

        out[name] = float(norm(jax.grad(objective)(state.params)))
    return out
