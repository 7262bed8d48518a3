"""Random planar affine distortions (sec. III-A / III-C of the paper), applied on the device.

The paper trains on 60,000 originals plus 540,000 copies distorted by random "planar affine
transformations: horizontal and vertical translations, scaling, squeezing (simultaneous
horizontal compression and vertical elongation, or the reverse) and horizontal shearing"; it gives
no ranges, so they are settings here. Parameters are drawn on the host (seeded), moved to the
device once per epoch, and each batch is resampled with bilinear interpolation through array-API
gathers (xp.take), so the same code runs on NumPy and CuPy.
"""

from __future__ import annotations

from typing import Any

import numpy

from ..arrays import array_namespace, device, scalar


def draw_inverse_maps(rng: numpy.random.Generator, count: int, ranges) -> numpy.ndarray:
    """(count, 6) rows (a, b, c, d, tx, ty): source = [[a, b], [c, d]] @ (target - centre - t) + centre.

    ranges: a config.DistortionConfig (probability, translate, scale, squeeze, shear). Rows of
    undistorted patterns are the identity (1, 0, 0, 1, 0, 0).
    """
    s = 1.0 + rng.uniform(-ranges.scale, ranges.scale, count)
    q = 1.0 + rng.uniform(-ranges.squeeze, ranges.squeeze, count)
    h = rng.uniform(-ranges.shear, ranges.shear, count)
    t = rng.uniform(-ranges.translate, ranges.translate, (count, 2))
    # forward map M = scale * squeeze * shear = [[s q, s q h], [0, s / q]]; its inverse:
    a, b, d = 1.0 / (s * q), -h * q / s, q / s
    maps = numpy.stack([a, b, numpy.zeros(count), d, t[:, 0], t[:, 1]], axis=1)
    keep = rng.uniform(size=count) >= ranges.probability
    maps[keep] = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
    return maps


def draw_pool_pass(
    rng: numpy.random.Generator, pool_maps: numpy.ndarray, n: int
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """One pass over the paper's fixed pool (sec. III-C): n originals plus P distorted copies.

    pool_maps: (P, 6) the copies' inverse maps, drawn once for the whole run; copy k distorts
    image k % n. Returns the pass's n patterns, drawn without replacement from the n + P, in a
    random order: their image indices (n,) and maps (n, 6) (identity rows for originals).
    """
    pick = rng.choice(n + len(pool_maps), n, replace=False)
    maps = numpy.tile(numpy.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]), (n, 1))
    copies = pick >= n
    maps[copies] = pool_maps[pick[copies] - n]
    return pick % n, maps


def apply_affine(x, maps, background: float) -> Any:
    """Resample each image of x: (1, S, S, B) with maps: (B, 6) (see draw_inverse_maps).

    Bilinear interpolation; pixels that come from outside the image take the background value.
    """
    xp = array_namespace(x)
    dev = device(x)
    _, size, _, n = x.shape
    centre = (size - 1) / 2.0
    grid = xp.arange(size, dtype=x.dtype, device=dev) - centre
    u = grid[None, :, None]  # target column (x), broadcast over rows and batch
    v = grid[:, None, None]  # target row (y)
    a, b, c, d, tx, ty = (maps[:, k][None, None, :] for k in range(6))
    src_x = a * (u - tx) + b * (v - ty) + centre  # (S, S, B)
    src_y = c * (u - tx) + d * (v - ty) + centre
    x0, y0 = xp.floor(src_x), xp.floor(src_y)
    wx, wy = src_x - x0, src_y - y0
    flat = xp.reshape(x, (-1,))
    batch = xp.arange(n, device=dev)[None, None, :]
    out = xp.zeros((size, size, n), dtype=x.dtype, device=dev)
    for dy, dx, weight in (
        (0, 0, (1 - wx) * (1 - wy)),
        (0, 1, wx * (1 - wy)),
        (1, 0, (1 - wx) * wy),
        (1, 1, wx * wy),
    ):
        xi, yi = xp.astype(x0, xp.int64) + dx, xp.astype(y0, xp.int64) + dy
        inside = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        # clamped with maximum/minimum: clip through array-api-compat masks and syncs a GPU
        low, high = scalar(0, yi), scalar(size - 1, yi)
        row, col = xp.minimum(xp.maximum(yi, low), high), xp.minimum(xp.maximum(xi, low), high)
        index = (row * size + col) * n + batch
        values = xp.reshape(xp.take(flat, xp.reshape(index, (-1,))), (size, size, n))
        out += weight * xp.where(inside, values, background)
    return out[None, ...]
