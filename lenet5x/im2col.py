"""im2col / col2im for valid, stride-1 convolutions in the batch-last layout (C, H, W, N).

Both loop only over the k*k kernel offsets (25 strided slices for 5x5), as Chainer does: no
scatter, no fancy indexing, nothing outside the array API. With the batch last, each slice is a
run of (W_out * N) contiguous numbers, which is what makes them cheap.
"""

from __future__ import annotations

from .namespace import array_namespace, device, launch_bound


def im2col(x, k: int):
    """x: (C, H, W, N) -> cols: (C*k*k, Ho*Wo*N), rows ordered (c, i, j), Ho = H-k+1, Wo = W-k+1."""
    xp = array_namespace(x)
    c, h, w, n = x.shape
    ho, wo = h - k + 1, w - k + 1
    if ho == 1 and wo == 1:  # one output position (C5): the columns are the input itself
        return xp.reshape(x, (c * k * k, n))
    patches = [x[:, i : i + ho, j : j + wo, :] for i in range(k) for j in range(k)]
    return xp.reshape(xp.stack(patches, axis=1), (c * k * k, ho * wo * n))


def col2im(cols, shape: tuple[int, int, int, int], k: int, rounds: bool | None = None):
    """Adjoint of im2col. cols: (C*k*k, Ho*Wo*N) -> (C, H, W, N) with shape = (C, H, W, N).

    Every input pixel receives the sum of the column entries that read it, by one of two sets of
    slice-additions with the same sums: k*k of them into the output, or (`rounds`) two rounds of
    k through a buffer. The rounds take fewer operations and more memory traffic, so they win
    where each operation's fixed cost outweighs its work: on a GPU, where each is a kernel
    launch, and for small batches; on a CPU, k*k for large ones. None chooses so.
    """
    xp = array_namespace(cols)
    c, h, w, n = shape
    ho, wo = h - k + 1, w - k + 1
    if ho == 1 and wo == 1:
        return xp.reshape(cols, shape)
    if rounds is None:
        rounds = n <= 32 or launch_bound(cols)
    x = xp.zeros(shape, dtype=cols.dtype, device=device(cols))
    if rounds:
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


# -- 2x2-blocked variant ---------------------------------------------------------------------------
# The columns of every 2x2 block of outputs share most of their inputs: one (k+1)x(k+1) input
# patch covers the block. Taking that patch once per block makes the columns 2.8 times smaller
# than k*k per output (36/4 = 9 numbers per output, not 25) and gives the matmul four times the
# output rows, a better shape for a BLAS: the same products, at 1.44 times the multiply-adds,
# faster (C1 and C3 at batch 128: a quarter less time forward and backward). The weight matrix
# holds each kernel four times, shifted by the output's place (di, dj) in its block.


def blocked_im2col(x, k: int):
    """x: (C, H, W, N) with even H-k+1 and W-k+1 -> (C*(k+1)^2, (Ho/2)*(Wo/2)*N), rows (c, a, b)."""
    xp = array_namespace(x)
    c, h, w, n = x.shape
    ho, wo, p = h - k + 1, w - k + 1, k + 1
    patches = [x[:, a : a + ho - 1 : 2, b : b + wo - 1 : 2, :] for a in range(p) for b in range(p)]
    return xp.reshape(xp.stack(patches, axis=1), (c * p * p, (ho // 2) * (wo // 2) * n))


def blocked_col2im(cols, shape: tuple[int, int, int, int], k: int, rounds: bool | None = None):
    """Adjoint of blocked_im2col: (C*(k+1)^2, (Ho/2)*(Wo/2)*N) -> (C, H, W, N).

    As col2im: (k+1)^2 strided slice-additions, or (`rounds`) two rounds of k+1 through a buffer.
    """
    xp = array_namespace(cols)
    c, h, w, n = shape
    ho, wo, p = h - k + 1, w - k + 1, k + 1
    if rounds is None:
        rounds = n <= 32 or launch_bound(cols)
    x = xp.zeros(shape, dtype=cols.dtype, device=device(cols))
    if rounds:
        cols = xp.reshape(cols, (c, p, p, ho // 2, wo // 2, n))
        rows = xp.zeros((c, p, ho // 2, w, n), dtype=cols.dtype, device=device(cols))
        for b in range(p):
            rows[:, :, :, b : b + wo - 1 : 2, :] += cols[:, :, b, ...]
        for a in range(p):
            x[:, a : a + ho - 1 : 2, :, :] += rows[:, a, ...]
        return x
    cols = xp.reshape(cols, (c, p * p, ho // 2, wo // 2, n))
    for a in range(p):
        for b in range(p):
            x[:, a : a + ho - 1 : 2, b : b + wo - 1 : 2, :] += cols[:, a * p + b, ...]
    return x


_SHIFTS: dict[tuple, object] = {}  # (k, dtype, device) -> shift_matrix


def shift_matrix(k: int, like):
    """(k*k, 4*(k+1)^2) 0/1 matrix: row (i, j) of a kernel -> its places (di, dj, i+di, j+dj) in
    the four shifted (k+1)x(k+1) windows. Built once per size, dtype and device."""
    key = (k, like.dtype, str(device(like)))  # str(dtype) costs 3 us: the dtype itself
    if key not in _SHIFTS:
        xp = array_namespace(like)
        p, dev = k + 1, device(like)
        r = xp.arange(k * k, device=dev)[:, None]  # kernel place (i, j)
        c = xp.arange(4 * p * p, device=dev)[None, :]  # window place (di, dj, a, b)
        shift, place = c // (p * p), c % (p * p)
        a, b = place // p, place % p
        _SHIFTS[key] = xp.astype((a == r // k + shift // 2) & (b == r % k + shift % 2), like.dtype)
    return _SHIFTS[key]


def blocked_weight(w):
    """(C_out, C_in, k, k) -> (4*C_out, C_in*(k+1)^2): row (o, di, dj) is w[o] moved by (di, dj)."""
    xp = array_namespace(w)
    c_out, c_in, k, _ = w.shape
    # rows (o, c), columns (di, dj, a, b)
    shifted = xp.reshape(w, (c_out * c_in, k * k)) @ shift_matrix(k, w)
    shifted = xp.permute_dims(xp.reshape(shifted, (c_out, c_in, 4, (k + 1) ** 2)), (0, 2, 1, 3))
    return xp.reshape(shifted, (4 * c_out, c_in * (k + 1) ** 2))


def blocked_weight_adjoint(big, c_out: int, c_in: int, k: int):
    """Adjoint of blocked_weight: (4*C_out, C_in*(k+1)^2) -> (C_out, C_in, k, k), the sum of the
    four shifted windows (a shared weight's gradient sums all its connections)."""
    xp = array_namespace(big)
    big = xp.permute_dims(xp.reshape(big, (c_out, 4, c_in, (k + 1) ** 2)), (0, 2, 1, 3))
    summed = xp.reshape(big, (c_out * c_in, 4 * (k + 1) ** 2)) @ shift_matrix(k, big).T
    return xp.reshape(summed, (c_out, c_in, k, k))


def from_blocks(y, shape: tuple[int, int, int, int]):
    """(4*C, (Ho/2)*(Wo/2)*N) with rows (c, di, dj) -> (C, Ho, Wo, N)."""
    xp = array_namespace(y)
    c, ho, wo, n = shape
    y = xp.reshape(y, (c, 2, 2, ho // 2, wo // 2, n))
    return xp.reshape(xp.permute_dims(y, (0, 3, 1, 4, 2, 5)), shape)


def to_blocks(y):
    """Inverse of from_blocks: (C, Ho, Wo, N) -> (4*C, (Ho/2)*(Wo/2)*N)."""
    xp = array_namespace(y)
    c, ho, wo, n = y.shape
    y = xp.reshape(y, (c, ho // 2, 2, wo // 2, 2, n))
    return xp.reshape(xp.permute_dims(y, (0, 2, 4, 1, 3, 5)), (4 * c, -1))
