"""lenet5x: LeNet-5 (LeCun et al., 1998) from scratch on the Python array API standard.

Layout convention used everywhere: the batch is the *last* axis. Feature maps are
(C, H, W, N) and vectors are (F, N); this keeps every convolution one large matmul and every
im2col slice a contiguous run of N numbers (see im2col.py).
"""

__version__ = "0.1.0"
