"""im2col / col2im for valid, stride-1 convolutions in the batch-last layout (C, H, W, N).

Both loop only over the k*k kernel offsets (25 strided slices for 5x5), as Chainer does: no
scatter, no fancy indexing, nothing outside the array API. With the batch last, each slice is a
run of (W_out * N) contiguous numbers, which is what makes them cheap.
"""

from __future__ import annotations

from .namespace import array_namespace, device


def im2col(x, k: int):
    """x: (C, H, W, N) -> cols: (C*k*k, Ho*Wo*N), rows ordered (c, i, j), Ho = H-k+1, Wo = W-k+1."""
    xp = array_namespace(x)
    c, h, w, n = x.shape
    ho, wo = h - k + 1, w - k + 1
    if ho == 1 and wo == 1:  # one output position (C5): the columns are the input itself
        return xp.reshape(x, (c * k * k, n))
    patches = [x[:, i : i + ho, j : j + wo, :] for i in range(k) for j in range(k)]
    return xp.reshape(xp.stack(patches, axis=1), (c * k * k, ho * wo * n))


def col2im(cols, shape: tuple[int, int, int, int], k: int):
    """Adjoint of im2col. cols: (C*k*k, Ho*Wo*N) -> (C, H, W, N) with shape = (C, H, W, N).

    Every input pixel receives the sum of the column entries that read it.
    """
    xp = array_namespace(cols)
    c, h, w, n = shape
    ho, wo = h - k + 1, w - k + 1
    if ho == 1 and wo == 1:
        return xp.reshape(cols, shape)
    x = xp.zeros(shape, dtype=cols.dtype, device=device(cols))
    if n <= 32:
        # small batches: two rounds of k slice-additions instead of k*k (the same sums), since
        # each operation's fixed cost outweighs its work; large batches: k*k additions in place
        cols = xp.reshape(cols, (c, k, k, ho, wo, n))
        rows = xp.zeros((c, k, ho, w, n), dtype=cols.dtype, device=device(cols))
        for j in range(k):
            rows[:, :, :, j : j + wo, :] += cols[:, :, j, ...]
        for i in range(k):
            x[:, i : i + ho, :, :] += rows[:, i, ...]
        return x
    cols = xp.reshape(cols, (c, k * k, ho, wo, n))
    for i in range(k):
        for j in range(k):
            x[:, i : i + ho, j : j + wo, :] += cols[:, i * k + j, ...]
    return x


def pad(x, p: int):
    """Zero-pad the two spatial axes of x: (C, H, W, N) -> (C, H+2p, W+2p, N)."""
    if p == 0:
        return x
    xp = array_namespace(x)
    c, h, w, n = x.shape
    out = xp.zeros((c, h + 2 * p, w + 2 * p, n), dtype=x.dtype, device=device(x))
    out[:, p : p + h, p : p + w, :] = x
    return out


def unpad(x, p: int):
    """Inverse of pad for gradients: drop the p-wide border of (C, H, W, N)."""
    if p == 0:
        return x
    return x[:, p:-p, p:-p, :]
