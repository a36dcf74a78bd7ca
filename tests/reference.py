"""Independent float64 reference implementations used by the tests.

Written from the textbook definitions (Wang et al. 2004; Wang, Simoncelli &
Bovik 2003; tf.image.ssim_multiscale's pooling rule) with scipy.ndimage and
numpy only: full N-D kernels, the five classic moments, no code shared with
the library.
"""

import numpy as np
from scipy import ndimage

MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_1d(size, sigma):
    d = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-(d**2) / (2 * sigma**2))
    return g / g.sum()


def window(size, sigma, spatial_dims, kind="gaussian"):
    if not isinstance(kind, str):  # taps given as data
        taps = np.asarray(kind, np.float64) / np.sum(kind)
    else:
        taps = gaussian_1d(size, sigma) if kind == "gaussian" else np.full(size, 1.0 / size)
    kernel = taps
    for _ in range(spatial_dims - 1):
        kernel = np.multiply.outer(kernel, taps)
    return kernel


def masked_moments(xc, yc, mc, kernel, mode):
    """Local (mu_x, mu_y, var_x, var_y, cov) of one channel, weighted by the mask `mc`."""

    def f(v, cval=0.0):
        return ndimage.correlate(v, kernel, mode=mode, cval=cval)

    w = f(mc, cval=1.0)
    w_safe = np.where(w > 1e-10, w, 1.0)
    mu_x, mu_y = f(mc * xc) / w_safe, f(mc * yc) / w_safe
    sxx = f(mc * xc * xc) / w_safe - mu_x**2
    syy = f(mc * yc * yc) / w_safe - mu_y**2
    sxy = f(mc * xc * yc) / w_safe - mu_x * mu_y
    return mu_x, mu_y, sxx, syy, sxy


def ssim_maps(
    x,
    y,
    *,
    max_val=1.0,
    size=11,
    sigma=1.5,
    k1=0.01,
    k2=0.03,
    kind="gaussian",
    padding="valid",
    mask=None,
    spatial_dims=2,
):
    """(ssim_map, cs_map, weights) for one image [*spatial, C] in float64."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    kernel = window(size, sigma, spatial_dims, kind)
    mode = {"valid": "constant", "same": "constant", "reflect": "mirror"}[padding]
    m = np.ones_like(x) if mask is None else np.broadcast_to(mask, x.shape).astype(np.float64)
    s_maps, c_maps = [], []
    for c in range(x.shape[-1]):
        mu_x, mu_y, sxx, syy, sxy = masked_moments(x[..., c], y[..., c], m[..., c], kernel, mode)
        c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        s = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs
        s_maps.append(s)
        c_maps.append(cs)
    s_map, c_map = np.stack(s_maps, -1), np.stack(c_maps, -1)
    weights = m
    if padding == "valid":
        crop = tuple(slice(size // 2, n - size // 2) for n in x.shape[:-1])
        s_map, c_map, weights = s_map[crop], c_map[crop], m[crop]
    return s_map, c_map, weights


def ssim(x, y, **kwargs):
    s_map, _, w = ssim_maps(x, y, **kwargs)
    axes = tuple(range(s_map.ndim - 1))
    per_channel = np.where(
        w.sum(axes) > 0, (s_map * w).sum(axes) / np.maximum(w.sum(axes), 1e-300), 1.0
    )
    return per_channel.mean()


def ms_ssim(x, y, *, max_val=1.0, weights=MS_WEIGHTS):
    """MS-SSIM of one image [H, W, C] with tf.image.ssim_multiscale's rules."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    values = []
    for level in range(len(weights)):
        if level:
            x, y = downsample(x), downsample(y)
        s_map, c_map, _ = ssim_maps(x, y, max_val=max_val)
        values.append(s_map.mean((0, 1)) if level == len(weights) - 1 else c_map.mean((0, 1)))
    values = np.maximum(np.stack(values, -1), 0.0)
    return np.prod(values ** np.asarray(weights), axis=-1).mean()


def downsample(x):
    h, w = x.shape[0], x.shape[1]
    x = np.pad(x, ((0, h % 2), (0, w % 2), (0, 0)), mode="symmetric")
    h, w = x.shape[0] // 2, x.shape[1] // 2
    return x.reshape(h, 2, w, 2, x.shape[-1]).mean((1, 3))


# --- MS-SSIM in N-D, with masks and fitted scales --------------------------------
# Written from the definitions: tf.image.ssim_multiscale's pooling rule (repeat
# the last sample of an odd axis, then average 2 samples per axis) on every
# spatial axis; masks pooled with the images as a normalised convolution
# (Knutsson & Westin 1993; pytorch-msssim issue #50); each scale's statistics
# weighted as in `ssim_maps`.


def pool2_nd(x, spatial_dims):
    """2x average pooling along the first `spatial_dims` axes of [*spatial, C]."""
    for axis in range(spatial_dims):
        if x.shape[axis] % 2:
            last = np.take(x, [x.shape[axis] - 1], axis=axis)
            x = np.concatenate([x, last], axis=axis)
        even = np.take(x, range(0, x.shape[axis], 2), axis=axis)
        odd = np.take(x, range(1, x.shape[axis], 2), axis=axis)
        x = (even + odd) / 2.0
    return x


def fitted_scales(shape, size, count):
    """How many scales fit: halve (rounding up) while the window still fits."""
    n, fit = min(shape), 0
    while fit < count and n >= size:
        fit += 1
        n = -(-n // 2)
    return fit


def ms_ssim_nd(
    x,
    y,
    *,
    max_val=1.0,
    weights=MS_WEIGHTS,
    size=11,
    sigma=1.5,
    kind="gaussian",
    spatial_dims=2,
    mask=None,
    fit_scales=False,
):
    """MS-SSIM of one image [*spatial, C] in float64 (masks, N-D, fitted scales)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    m = np.ones_like(x) if mask is None else np.broadcast_to(mask, x.shape).astype(np.float64)
    x, y = np.where(m > 0, x, 0.0), np.where(m > 0, y, 0.0)
    weights = np.asarray(weights, np.float64)
    if fit_scales:
        fit = fitted_scales(x.shape[:spatial_dims], size, len(weights))
        if fit < len(weights):
            weights = weights[:fit] / weights[:fit].sum()
    options = dict(max_val=max_val, size=size, sigma=sigma, kind=kind, spatial_dims=spatial_dims)
    values = []
    for level in range(len(weights)):
        if level:
            pooled = pool2_nd(m, spatial_dims)
            safe = np.where(pooled > 0, pooled, 1.0)
            x = np.where(pooled > 0, pool2_nd(x * m, spatial_dims) / safe, 0.0)
            y = np.where(pooled > 0, pool2_nd(y * m, spatial_dims) / safe, 0.0)
            m = pooled
        s_map, c_map, w = ssim_maps(x, y, mask=None if mask is None else m, **options)
        term = s_map if level == len(weights) - 1 else c_map
        axes = tuple(range(spatial_dims))
        total = w.sum(axes)
        values.append(np.where(total > 0, (term * w).sum(axes) / np.where(total > 0, total, 1), 1))
    values = np.maximum(np.stack(values, -1), 0.0)
    return np.prod(values**weights, axis=-1).mean()


# ---------------------------------------------------------------- Zhao et al. (multi-sigma)
# Semantics of the released loss layers of Zhao, Gallo, Frosio and Kautz (IEEE TCI 2017),
# NVlabs/PL4NN `src/loss.py`, classes `MSSSIM` and `MSSSIML1` (read, not copied): one value
# per odd square patch; for each sigma a 2-D window exp(-k^2 / (2 sigma^2)), k = -(n // 2) ..
# n // 2, over the whole patch, normalised to sum 1 in 2-D; the five textbook moments;
# C1 = 0.01^2, C2 = 0.03^2 on [0, 1] data; MS-SSIM = l of the last (largest) sigma times the
# product of cs over all sigmas, no exponents; Mix = alpha * (1 - MS-SSIM) +
# (1 - alpha) * sum(G_last * |x - y|); both summed over batch and channels, then divided by
# batch * channels.
ZHAO_SIGMAS = (0.5, 1.0, 2.0, 4.0, 8.0)


def zhao_window(n, sigma):
    k = np.arange(-(n // 2), n // 2 + 1, dtype=np.float64)
    g = np.exp(-(k**2) / (2.0 * sigma**2))
    w = np.outer(g, g)
    return w / w.sum()


def zhao_patch_msssim(x, y, *, sigmas=ZHAO_SIGMAS, c1=0.01**2, c2=0.03**2):
    """Per-channel MS-SSIM of one odd square patch [n, n, C] (float64), as the layer forward."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = x.shape[0]
    assert x.shape[1] == n and n % 2 == 1
    out = np.ones(x.shape[-1])
    for i, sigma in enumerate(sigmas):
        w = zhao_window(n, sigma)[..., None]
        mux, muy = (w * x).sum((0, 1)), (w * y).sum((0, 1))
        sxx = (w * x * x).sum((0, 1)) - mux**2
        syy = (w * y * y).sum((0, 1)) - muy**2
        sxy = (w * x * y).sum((0, 1)) - mux * muy
        out = out * (2 * sxy + c2) / (sxx + syy + c2)
        if i == len(sigmas) - 1:
            out = out * (2 * mux * muy + c1) / (mux**2 + muy**2 + c1)
    return out


def zhao_msssim_l1(x, y, *, alpha, sigmas=ZHAO_SIGMAS):
    """The MSSSIML1 layer's forward for a batch of patches [B, n, n, C] (float64 scalar)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    batch, n, _, channels = x.shape
    msssim = np.stack([zhao_patch_msssim(a, b, sigmas=sigmas) for a, b in zip(x, y, strict=True)])
    loss_msssim = 1.0 - msssim.sum() / (batch * channels)
    g = zhao_window(n, sigmas[-1])[None, :, :, None]
    loss_l1 = (np.abs(x - y) * g).sum() / (batch * channels)
    return alpha * loss_msssim + (1.0 - alpha) * loss_l1


def multi_sigma_maps(
    x, y, *, size=31, sigmas=ZHAO_SIGMAS, max_val=1.0, padding="valid", mask=None, spatial_dims=2
):
    """(map, weights): the sliding-window form for one image [*spatial, C], float64.

    At each position, the layer's per-patch formula with windows of `size` taps centred there
    (N-D kernels, scipy correlations, masks weighted as in `ssim_maps`).
    """
    x = np.asarray(x, np.float64) / max_val
    y = np.asarray(y, np.float64) / max_val
    m = np.ones_like(x) if mask is None else np.broadcast_to(mask, x.shape).astype(np.float64)
    x, y = np.where(m > 0, x, 0.0), np.where(m > 0, y, 0.0)
    mode = {"valid": "constant", "same": "constant", "reflect": "mirror"}[padding]
    largest = int(np.argmax(sigmas))
    maps = []
    for c in range(x.shape[-1]):
        xc, yc, mc = x[..., c], y[..., c], m[..., c]
        value = 1.0
        for i, sigma in enumerate(sigmas):
            kernel = window(size, sigma, spatial_dims)
            mu_x, mu_y, sxx, syy, sxy = masked_moments(xc, yc, mc, kernel, mode)
            value = value * (2 * sxy + 0.03**2) / (sxx + syy + 0.03**2)
            if i == largest:
                value = value * (2 * mu_x * mu_y + 0.01**2) / (mu_x**2 + mu_y**2 + 0.01**2)
        maps.append(value)
    out, weights = np.stack(maps, -1), m
    if padding == "valid":
        crop = tuple(slice(size // 2, n - (size - 1 - size // 2)) for n in x.shape[:-1])
        out, weights = out[crop], m[crop]
    return out, weights


def multi_sigma_ssim(x, y, **kwargs):
    value_map, w = multi_sigma_maps(x, y, **kwargs)
    axes = tuple(range(value_map.ndim - 1))
    total = w.sum(axes)
    per_channel = np.where(total > 0, (value_map * w).sum(axes) / np.maximum(total, 1e-300), 1.0)
    return per_channel.mean()
