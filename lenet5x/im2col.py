"""im2col / col2im for valid, stride-1 convolutions in the batch-last layout (C, H, W, N).

The columns are the input's windows: for each output (or each 2x2 block of outputs, below) the
window of input pixels under it. im2col gathers them with one `take` of precomputed positions,
whatever the kernel size; with the batch last each gathered position is a run of N contiguous
numbers. col2im, its adjoint, adds every column entry back onto the pixel it came from: one
`take` of each pixel's entries through an index table padded with a zero slot, then one sum
over them (four operations whatever the kernel size, and no writes into an array, which JAX
does not allow).

The positions are computed once per shape, on the device. Nothing here leaves the array API.
"""

from __future__ import annotations

from typing import Any

from .arrays import array_namespace, constant


def _window_positions(xp, dev, h: int, w: int, size: int, stride: int):
    """(size*size * mh*mw,) flat pixel positions (row * w + column) of the size x size windows
    at `stride`, ordered (window place (a, b), window (bi, bj)); mh = (h - size) // stride + 1."""
    mh, mw = (h - size) // stride + 1, (w - size) // stride + 1
    a = xp.reshape(xp.arange(size, device=dev), (size, 1, 1, 1))
    b = xp.reshape(xp.arange(size, device=dev), (1, size, 1, 1))
    bi = xp.reshape(xp.arange(mh, device=dev), (1, 1, mh, 1))
    bj = xp.reshape(xp.arange(mw, device=dev), (1, 1, 1, mw))
    return xp.reshape((a + stride * bi) * w + (b + stride * bj), (-1,))


def _reads_along(xp, dev, n: int, size: int, stride: int, windows: int):
    """Along one axis of n pixels: for pixel y, the K = ceil(size / stride) windows bi that may
    cover it (bi = y // stride - j) and the place a = y - stride * bi it has in each, with
    whether it does (0 <= bi < windows and a < size). Each (n, K)."""
    k = -(-size // stride)
    y = xp.reshape(xp.arange(n, device=dev), (n, 1))
    bi = y // stride - xp.reshape(xp.arange(k, device=dev), (1, k))
    a = y - stride * bi
    return bi, a, (bi >= 0) & (bi < windows) & (a < size)


def _pixel_entries(xp, dev, h: int, w: int, size: int, stride: int):
    """(K*K * h*w,): for each of the K*K candidates (j, j') and each pixel, the column entry
    that may read the pixel (an index into the windows' order above; K = ceil(size / stride)),
    the absent ones pointing one past the last entry (a zero slot). K*K is 25 for 5x5 windows
    at stride 1, 9 for 6x6 at stride 2. Candidates first: the sum over them is then a sum of
    K*K contiguous blocks (NumPy sums over a middle axis with a short inner one much more
    slowly)."""
    mh, mw = (h - size) // stride + 1, (w - size) // stride + 1
    bi, a, row_ok = _reads_along(xp, dev, h, size, stride, mh)
    bj, b, col_ok = _reads_along(xp, dev, w, size, stride, mw)
    k = bi.shape[1]
    # axes (y, j, x, j'): pixel (y, x), its j-th candidate row window and j'-th column window
    bi, a, row_ok = (xp.reshape(v, (h, k, 1, 1)) for v in (bi, a, row_ok))
    bj, b, col_ok = (xp.reshape(v, (1, 1, w, k)) for v in (bj, b, col_ok))
    entry = (a * size + b) * (mh * mw) + bi * mw + bj
    entry = xp.where(row_ok & col_ok, entry, size * size * mh * mw)
    return xp.reshape(xp.permute_dims(entry, (1, 3, 0, 2)), (-1,))


def _index(kind: str, h: int, w: int, size: int, stride: int, like):
    """The window positions ("gather") or pixel entries ("scatter") on like's device, made once."""
    made = _window_positions if kind == "gather" else _pixel_entries
    return constant(
        (kind, h, w, size, stride), like, lambda xp, dev: made(xp, dev, h, w, size, stride)
    )


def windows(x, size: int, stride: int) -> Any:
    """x: (C, H, W, N) -> (C*size*size, mh*mw*N): rows (c, a, b), columns (bi, bj, n)."""
    xp = array_namespace(x)
    c, h, w, n = x.shape
    index = _index("gather", h, w, size, stride, x)
    picked = xp.take(xp.reshape(x, (c, h * w, n)), index, axis=1)  # (C, size^2 * mh*mw, N)
    return xp.reshape(picked, (c * size * size, -1))


def windows_adjoint(cols, shape, size: int, stride: int) -> Any:
    """Adjoint of windows: (C*size*size, mh*mw*N) -> (C, H, W, N), shape = (C, H, W, N).

    Each pixel's K*K candidate entries (_pixel_entries) are taken, absent ones from the zero slot
    appended to the entries, and summed in the order of the windows' places (a, b), as
    size*size slice-additions in row-major order would add them."""
    xp = array_namespace(cols)
    c, h, w, n = shape
    mh, mw = (h - size) // stride + 1, (w - size) // stride + 1
    table = _index("scatter", h, w, size, stride, cols)
    entries = xp.reshape(cols, (c, size * size * mh * mw, n))
    picked = xp.take(xp.concat([entries, zeros((c, 1, n), cols)], axis=1), table, axis=1)
    return xp.reshape(xp.sum(xp.reshape(picked, (c, -1, h * w * n)), axis=1), shape)


def zeros(shape: tuple, like) -> Any:
    """A zero array of `shape` in like's dtype and device, made once: only ever read (the zero
    slots of the take tables here and of Conv2D's dense weight)."""
    return constant(
        ("zeros", shape, like.dtype),
        like,
        lambda xp, dev: xp.zeros(shape, dtype=like.dtype, device=dev),
    )


def im2col(x, k: int) -> Any:
    """x: (C, H, W, N) -> cols: (C*k*k, Ho*Wo*N), rows ordered (c, i, j), Ho = H-k+1, Wo = W-k+1."""
    c, h, w, n = x.shape
    if h == k and w == k:  # one output position (C5): the columns are the input itself
        return array_namespace(x).reshape(x, (c * k * k, n))
    return windows(x, k, 1)


def col2im(cols, shape: tuple[int, int, int, int], k: int) -> Any:
    """Adjoint of im2col. cols: (C*k*k, Ho*Wo*N) -> (C, H, W, N) with shape = (C, H, W, N)."""
    c, h, w, n = shape
    if h == k and w == k:
        return array_namespace(cols).reshape(cols, shape)
    return windows_adjoint(cols, shape, k, 1)


def pad(x, p: int) -> Any:
    """Zero-pad the two spatial axes of x: (C, H, W, N) -> (C, H+2p, W+2p, N), by concatenation
    (no writes into an array)."""
    if p == 0:
        return x
    xp = array_namespace(x)
    c, h, w, n = x.shape
    side = zeros((c, h, p, n), x)
    rows = xp.concat([side, x, side], axis=2)
    band = zeros((c, p, w + 2 * p, n), x)
    return xp.concat([band, rows, band], axis=1)


def unpad(x, p: int) -> Any:
    """Inverse of pad for gradients: drop the p-wide border of (C, H, W, N)."""
    if p == 0:
        return x
    return x[:, p:-p, p:-p, :]


# -- 2x2-blocked variant ---------------------------------------------------------------------------
# The columns of every 2x2 block of outputs share most of their inputs: one (k+1)x(k+1) input
# patch covers the block. Taking that patch once per block makes the columns 2.8 times smaller
# than k*k per output (36/4 = 9 numbers per output, not 25) and gives the matmul four times the
# output rows, a better shape for a BLAS: the same products, at 1.44 times the multiply-adds,
# faster (docs/speed.md, "Layout"). The weight matrix
# holds each kernel four times, shifted by the output's place (di, dj) in its block.


def blocked_im2col(x, k: int) -> Any:
    """x: (C, H, W, N) with even H-k+1 and W-k+1 -> (C*(k+1)^2, (Ho/2)*(Wo/2)*N), rows (c, a, b):
    the (k+1)x(k+1) windows at stride 2."""
    return windows(x, k + 1, 2)


def blocked_col2im(cols, shape: tuple[int, int, int, int], k: int) -> Any:
    """Adjoint of blocked_im2col: (C*(k+1)^2, (Ho/2)*(Wo/2)*N) -> (C, H, W, N)."""
    return windows_adjoint(cols, shape, k + 1, 2)


def shift_matrix(k: int, like) -> Any:
    """(k*k, 4*(k+1)^2) 0/1 matrix: row (i, j) of a kernel -> its places (di, dj, i+di, j+dj) in
    the four shifted (k+1)x(k+1) windows. Built once per size, dtype and device."""

    def make(xp, dev):
        p = k + 1
        r = xp.arange(k * k, device=dev)[:, None]  # kernel place (i, j)
        c = xp.arange(4 * p * p, device=dev)[None, :]  # window place (di, dj, a, b)
        shift, place = c // (p * p), c % (p * p)
        a, b = place // p, place % p
        return xp.astype((a == r // k + shift // 2) & (b == r % k + shift % 2), like.dtype)

    # the dtype itself in the key, not its name (str(dtype) is slow on a hot path)
    return constant(("shift", k, like.dtype), like, make)


def blocked_weight(w) -> Any:
    """(C_out, C_in, k, k) -> (4*C_out, C_in*(k+1)^2): row (o, di, dj) is w[o] moved by (di, dj)."""
    xp = array_namespace(w)
    c_out, c_in, k, _ = w.shape
    # rows (o, c), columns (di, dj, a, b)
    shifted = xp.reshape(w, (c_out * c_in, k * k)) @ shift_matrix(k, w)
    shifted = xp.permute_dims(xp.reshape(shifted, (c_out, c_in, 4, (k + 1) ** 2)), (0, 2, 1, 3))
    return xp.reshape(shifted, (4 * c_out, c_in * (k + 1) ** 2))


def blocked_weight_adjoint(big, c_out: int, c_in: int, k: int) -> Any:
    """Adjoint of blocked_weight: (4*C_out, C_in*(k+1)^2) -> (C_out, C_in, k, k), the sum of the
    four shifted windows (a shared weight's gradient sums all its connections)."""
    xp = array_namespace(big)
    big = xp.permute_dims(xp.reshape(big, (c_out, 4, c_in, (k + 1) ** 2)), (0, 2, 1, 3))
    summed = xp.reshape(big, (c_out * c_in, 4 * (k + 1) ** 2)) @ shift_matrix(k, big).T
    return xp.reshape(summed, (c_out, c_in, k, k))


def in_block_order(y) -> bool:
    """Whether maps y are in 2x2-block order, (C, 2, 2, H/2, W/2, N): y[c, di, dj, i, j, n] is
    pixel (2i + di, 2j + dj) of map c (Conv2D's block_order), rather than (C, H, W, N)."""
    return y.ndim == 6


def from_blocks(y, shape: tuple[int, int, int, int]) -> Any:
    """(4*C, (Ho/2)*(Wo/2)*N) with rows (c, di, dj) -> (C, Ho, Wo, N)."""
    xp = array_namespace(y)
    c, ho, wo, n = shape
    y = xp.reshape(y, (c, 2, 2, ho // 2, wo // 2, n))
    return xp.reshape(xp.permute_dims(y, (0, 3, 1, 4, 2, 5)), shape)


def to_blocks(y) -> Any:
    """Inverse of from_blocks: (C, Ho, Wo, N) -> (4*C, (Ho/2)*(Wo/2)*N); maps already in block
    order, (C, 2, 2, Ho/2, Wo/2, N), are only reshaped."""
    xp = array_namespace(y)
    if in_block_order(y):
        return xp.reshape(y, (4 * y.shape[0], -1))
    c, ho, wo, n = y.shape
    y = xp.reshape(y, (c, ho // 2, 2, wo // 2, 2, n))
    return xp.reshape(xp.permute_dims(y, (0, 2, 4, 1, 3, 5)), (4 * c, -1))


def plain_order(y) -> Any:
    """Maps in either order -> (C, H, W, N) (for pictures and tests)."""
    if not in_block_order(y):
        return y
    c, _, _, h, w, n = y.shape
    return from_blocks(array_namespace(y).reshape(y, (4 * c, -1)), (c, 2 * h, 2 * w, n))
