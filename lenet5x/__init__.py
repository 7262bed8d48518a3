"""lenet5x: LeNet-5 (LeCun et al., 1998) from scratch on the Python array API standard.

    import lenet5x
    net = lenet5x.load("lenet5")          # the paper's LeNet-5, trained, shipped in the package
    net.predict(images)                   # (N, 28, 28) MNIST-like images -> (N,) digits
    lenet5x.fit("smoke", epochs=1)        # a training run, as `lenet5x train` makes it

Layout convention used everywhere inside: the batch is the *last* axis. Feature maps are
(C, H, W, N) and vectors are (F, N); this keeps every convolution one large matmul and every
im2col gather a contiguous run of N numbers (see im2col.py). The API takes and returns
batch-first NumPy arrays.
"""

__version__ = "0.2.0"

from .api import FitResult, InputError, Network, Prediction, fit, load  # noqa: E402
from .sweep import sweep  # noqa: E402  (the function shadows its module: lenet5x.sweep(...))

__all__ = [
    "FitResult",
    "InputError",
    "Network",
    "Prediction",
    "__version__",
    "fit",
    "load",
    "sweep",
]
