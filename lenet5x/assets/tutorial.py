# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # LeNet-5 from scratch: a guided tour of `lenet5x`
#
# **LeNet-5** is the convolutional network of LeCun, Bottou, Bengio and Haffner, *Gradient-Based
# Learning Applied to Document Recognition* (Proc. IEEE, 1998). It reads a 32x32 picture of a
# handwritten digit through seven layers: two convolutions (C1, C3) each followed by a trainable
# 2x2 subsampling (S2, S4), a third convolution (C5) that sees the whole remaining 5x5 field, a
# fully connected layer (F6) of 84 units, and an output of ten Euclidean radial basis function
# units (RBF) that compare F6's 84 numbers with a fixed 7x12 bitmap of each digit. It has about
# 60,000 trainable parameters and was trained with a second-order method of its own, *Stochastic
# Diagonal Levenberg-Marquardt* (SDLM). On MNIST the paper reports 0.95% test error.
#
# `lenet5x` writes every layer's three passes by hand (forward, backward, and the
# second-derivative pass that SDLM needs) on the Python array API standard, so the same code runs
# on NumPy, CuPy, PyTorch and JAX arrays. This notebook walks through it:
#
# 1. the shipped, trained network;
# 2. one layer by hand, with its gradients checked by finite differences;
# 3. the C3 connection table (Table I) and the 60,000 parameters;
# 4. SDLM's per-parameter learning rates, set beside the paper's own figures;
# 5. a short training run;
# 6. what the layers see (the feature maps, the C1 kernels, F6's code against Fig. 3's bitmaps);
# 7. a "photo" of a digit through the network;
#
# with the loss and SGD against SDLM after the training run, and four exercises at the end.
#
# One convention to keep in mind: **inside the library the batch is the last axis**. Maps are
# `(C, H, W, N)` and vectors `(F, N)`. The high-level API (`lenet5x.load`, `Network`) takes
# ordinary batch-first NumPy images, `(N, 28, 28)` or `(N, 32, 32)`.

# %%
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy
from PIL import Image

import lenet5x
import lenet5x.backend
from lenet5x import paper
from lenet5x.config import DataConfig, ModelConfig
from lenet5x.data import load_dataset
from lenet5x.data.sources import find_dataset
from lenet5x.layers import Conv2D, ScaledTanh
from lenet5x.model import build_model
from lenet5x.optim import SDLM

plt.rcParams["figure.dpi"] = 80  # small pictures: the stored notebook stays light
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook bar, unused

# MNIST is looked for as the commands look for it: DATA (None: not set), $LENET5X_DATA_DIR,
# ~/.cache/lenet5x; if none has it, it is downloaded (55 MB) into the cache. Everything the
# notebook writes goes to a temporary folder, removed in the last cell.
DATA = None  # or the folder that holds the four MNIST files, "path/to/mnist"
found, looked_in = find_dataset("mnist", DATA)
if found:
    print("MNIST from", found["t10k-images-idx3-ubyte"].parent)
else:  # offline, the next cells fail: DATA above is where to say where the files are
    print("MNIST not in", *looked_in, "- it will be downloaded; offline, set DATA above")
WORK_DIR = tempfile.TemporaryDirectory(prefix="lenet5x-tutorial-")
WORK = Path(WORK_DIR.name)

# %% [markdown]
# ## 1. The shipped network
#
# The package ships the paper's LeNet-5 trained for 20 passes over MNIST's 60,000 training
# digits. `lenet5x.load` returns a `Network`: ask it for predictions, scores and feature maps.

# %%
net = lenet5x.load("lenet5")
print(net)
print(
    f"{net.parameter_count:,} trainable parameters; classes {net.classes}; scores: {net.score_kind}"
)

# %% [markdown]
# The MNIST test set has 10,000 digits. `load_dataset` reads the IDX files and pads the 28x28
# digits to 32x32, as the paper does (sec. III-A). The images are `uint8`, white ink on black.

# %%
host = load_dataset(DataConfig(dir=DATA))
print("train", host.train_images.shape, "test", host.test_images.shape, host.test_images.dtype)

predicted = net.predict(host.test_images)
wrong = numpy.flatnonzero(predicted != host.test_labels)
print(f"test error {len(wrong) / len(predicted):.2%} ({len(wrong)} of {len(predicted):,} digits)")
print(f"recorded with the weights: {net.test_error:.2%}; the paper: 0.95% (0.8% with distortions)")


# %%
def digit_grid(images, titles, rows, columns, colours=None, size=1.0):
    """A grid of small images with a title above each."""
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size * 1.15))
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(images):
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
            ax.set_title(titles[i], fontsize=10, color=None if colours is None else colours[i])
    fig.tight_layout()
    return fig


first = 24
digit_grid(
    host.test_images[:first],
    [f"pred {p}" for p in predicted[:first]],
    3,
    8,
    ["black" if p == t else "red" for p, t in zip(predicted, host.test_labels, strict=True)],
)
plt.show()
for i in wrong[wrong < first]:
    print(f"wrong: test digit {i}, a {host.test_labels[i]} read as {predicted[i]}")

# %% [markdown]
# A red title marks a mistake. Here are the first eight of all the mistakes, each with its true
# label and the network's answer:

# %%
digit_grid(
    host.test_images[wrong[:8]],
    [f"{host.test_labels[i]} \u2192 {predicted[i]}" for i in wrong[:8]],
    1,
    8,
    ["red"] * 8,
)
plt.show()

# %% [markdown]
# ## 2. One layer by hand
#
# Every layer in `lenet5x.layers` holds only its hyperparameters. Its parameters, caches and
# gradients are passed in and out as plain dicts of arrays:
#
# ```
# params       = layer.init(rng, backend)
# y, cache     = layer.forward(params, x)
# dx, grads    = layer.backward(params, cache, dy)      # dy = dE/dy
# d2x, h       = layer.backward2(params, cache, d2y)    # d2y = d2E/dy^2 (diagonal)
# ```
#
# We take a small convolution: 2 input maps of 6x6, 3 output maps, 3x3 kernels, a batch of 2,
# in float64. Its output is `(3, 4, 4, 2)`: maps, height, width, batch (last).

# %%
backend = lenet5x.backend.resolve("numpy", "float64")
rng = numpy.random.default_rng(0)

conv = Conv2D(2, 3, kernel=3)
params = conv.init(rng, backend)
params["bias"] = backend.asarray(rng.normal(size=3))  # biases start at 0; make them visible
x = backend.asarray(rng.normal(size=(2, 6, 6, 2)))

y, cache = conv.forward(params, x)
print("weight", params["weight"].shape, "bias", params["bias"].shape)
print("x", x.shape, "->", "y", y.shape)

# %% [markdown]
# ### Gradients, checked by finite differences
#
# Take the scalar $E = \sum g \cdot y$ for a fixed random array $g$; then $\partial E/\partial y
# = g$, and `backward` gives $\partial E/\partial x$ and $\partial E/\partial w$. We compare them
# with central differences, $(E(w + \varepsilon) - E(w - \varepsilon)) / 2\varepsilon$, one
# number at a time. (A convolution is linear in $w$ and in $x$, so central differences are exact
# here but for rounding: the relative errors below are rounding errors, near 1e-10.)

# %%
g = backend.asarray(rng.normal(size=y.shape))
dx, grads = conv.backward(params, cache, g)


def energy(weight=None, inputs=None):
    """E = sum(g * y) for the convolution with another weight or input."""
    p = params if weight is None else {**params, "weight": weight}
    out, _ = conv.forward(p, x if inputs is None else inputs)
    return float(numpy.sum(g * out))


def central_differences(f, a, eps=1e-5):
    """df/da, one element of `a` at a time."""
    a = numpy.array(a, dtype=numpy.float64)
    grad = numpy.zeros_like(a)
    for i in numpy.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        up = f(a)
        a[i] = old - eps
        down = f(a)
        a[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def relative_error(a, b):
    return float(numpy.max(numpy.abs(a - b)) / numpy.max(numpy.abs(b)))


dw_numeric = central_differences(lambda w: energy(weight=w), params["weight"])
dx_numeric = central_differences(lambda v: energy(inputs=v), x)
print(f"weight gradient: relative error {relative_error(grads['weight'], dw_numeric):.1e}")
print(f"input gradient:  relative error {relative_error(dx, dx_numeric):.1e}")

# %% [markdown]
# ### The second-derivative pass (Gauss-Newton, appendix C)
#
# SDLM needs, for every parameter $w_k$, an estimate $h_{kk}$ of the diagonal second derivative
# $\partial^2 E / \partial w_k^2$. The paper back-propagates it like a gradient, with squares
# (appendix C): for a unit $a_i = \sum_j u_{ij} x_j$ followed by $x_i = f(a_i)$,
#
# $$\frac{\partial^2 E}{\partial u_{ij}^2} = \frac{\partial^2 E}{\partial a_i^2}\, x_j^2
# \quad\text{(eq. 25)},\qquad
# \frac{\partial^2 E}{\partial a_k^2} = f'(a_k)^2 \sum_i u_{ik}^2\,
# \frac{\partial^2 E}{\partial a_i^2}\quad\text{(eq. 27)},$$
#
# and a shared weight adds the terms of all the connections that share it (eq. 23). This is the
# *Gauss-Newton* approximation: it drops the terms with $f''$ and the off-diagonal ones.
#
# A convolution is linear in its input and in its weights, $y = Jx + b$. If the loss has a
# diagonal curvature $h = \partial^2 E/\partial y^2 \ge 0$ in $y$, the Gauss-Newton matrix is
# $J^\top \mathrm{diag}(h)\, J$, and its diagonal is exactly $(J \circ J)^\top h$. So
# `backward2(h)` must equal `(J**2).T @ h`, with the input's Jacobian and with the weights'
# alike; we build each $J$ column by column with finite differences.


# %%
def jacobian(f, a, eps=1e-5):
    """J[i, j] = d f(a)_i / d a_j by central differences; f returns an array."""
    a = numpy.array(a, dtype=numpy.float64)
    columns = []
    for j in numpy.ndindex(a.shape):
        old = a[j]
        a[j] = old + eps
        up = f(a).ravel()
        a[j] = old - eps
        down = f(a).ravel()
        a[j] = old
        columns.append((up - down) / (2 * eps))
    return numpy.stack(columns, axis=1)


J_x = jacobian(lambda v: conv.forward(params, v)[0], x)  # (96 outputs, 144 inputs)
J_w = jacobian(lambda w: conv.forward({**params, "weight": w}, x)[0], params["weight"])

h = backend.asarray(rng.uniform(0, 1, size=y.shape))  # any d2E/dy^2 >= 0
d2x, h_params = conv.backward2(params, cache, h)

print("J_x", J_x.shape, " J_w", J_w.shape)
gauss_newton_x = (J_x**2).T @ h.ravel()
gauss_newton_w = (J_w**2).T @ h.ravel()
print(f"d2E/dx^2: relative error {relative_error(d2x.ravel(), gauss_newton_x):.1e}")
print(f"d2E/dw^2: relative error {relative_error(h_params['weight'].ravel(), gauss_newton_w):.1e}")

# %% [markdown]
# ### The squashing function (eq. 6)
#
# Every layer but the output goes through $f(a) = A \tanh(S a)$ with $A = 1.7159$ and $S = 2/3$
# (eq. 6). Appendix A explains the constants: $f(\pm 1) = \pm 1$, the second derivative is
# largest near $\pm 1$, and the gain stays close to 1 over the useful range.

# %%
tanh = ScaledTanh()
a = backend.asarray(numpy.linspace(-3, 3, 601))
f_a, tanh_cache = tanh.forward({}, a)
slope, _ = tanh.backward({}, tanh_cache, backend.asarray(numpy.ones(601)))  # f'(a)
print(f"A = {paper.A}, S = {paper.S:.4f}")
print("f(1) =", float(tanh.forward({}, backend.asarray([1.0]))[0][0]))
print(f"f'(0) = A*S = {float(slope[300]):.4f}")

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(a, f_a, label="f(a) = A tanh(S a)")
ax.plot(a, slope, label="f'(a)")
ax.plot([-1, 1], [-1, 1], "ko", ms=4, label="f(\u00b11) = \u00b11")
ax.axhline(0, color="0.8", lw=0.8)
ax.axvline(0, color="0.8", lw=0.8)
ax.set_xlabel("a")
ax.legend(fontsize=9)
plt.show()

# %% [markdown]
# ## 3. The architecture, the C3 table, and 60,000 parameters
#
# `build_model()` builds the paper's LeNet-5 (sec. II-B) as a list of named layers. With no
# argument it takes `ModelConfig()`'s defaults: the classic architecture as the shipped network
# was trained. Here is each layer's output shape, per pattern (the batch axis comes last):

# %%
model = build_model(ModelConfig())
for (name, layer), shape in zip(model.layers, model.shapes[1:], strict=True):
    print(f"{name:8s} {type(layer).__name__:15s} -> {shape}")

# %% [markdown]
# C3 does not connect every S2 map to every C3 map. Table I of the paper lists which of S2's six
# maps each of C3's sixteen maps reads: the first six read three neighbouring maps, the next six
# four neighbouring maps, three more read four non-neighbouring maps, and the last one reads all
# six. The paper gives two reasons: fewer connections, and broken symmetry, so that different
# maps are forced to extract different features.

# %%
table = numpy.zeros((6, 16), dtype=bool)  # rows: S2 maps, columns: C3 maps, as in Table I
for c3_map, s2_maps in enumerate(paper.C3_TABLE):
    table[list(s2_maps), c3_map] = True

fig, ax = plt.subplots(figsize=(8, 3.2))
ax.imshow(table, cmap="Greys", vmin=0, vmax=1.6)
for s2_map, c3_map in zip(*numpy.nonzero(table), strict=True):
    ax.text(c3_map, s2_map, "X", ha="center", va="center", fontsize=11)
ax.set_xticks(range(16))
ax.set_yticks(range(6))
ax.set_xticks(numpy.arange(-0.5, 16), minor=True)
ax.set_yticks(numpy.arange(-0.5, 6), minor=True)
ax.grid(which="minor", color="0.6")
ax.tick_params(which="minor", length=0)
ax.set_xlabel("C3 map")
ax.set_ylabel("S2 map")
ax.set_title("Table I: which S2 maps feed each C3 map")
plt.show()

connections = int(table.sum())
print(f"{connections} kernels of 5x5 + 16 biases = {connections * 25 + 16} parameters")

# %% [markdown]
# Now count the trainable parameters of a freshly initialized network, layer by layer, against
# the paper's figures (sec. II-B). Subsampling layers have one coefficient and one bias per map;
# C5 is a 5x5 convolution on 5x5 maps, so each of its 120 units sees all of S4.

# %%
params = model.init(numpy.random.default_rng(0), backend)
counts = model.parameter_count(params)
in_the_paper = {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164}
for layer, n in counts.items():
    print(f"{layer}: {n:6,d}   (paper: {in_the_paper[layer]:6,d})")
print(f"total: {sum(counts.values()):,d}")
assert counts == in_the_paper

# %% [markdown]
# The RBF output layer has parameters too, but fixed ones: the ten 7x12 bitmaps of Fig. 3, one
# per digit, with values +1 (ink) and -1. The output $y_i = \sum_j (x_j - w_{ij})^2$ (eq. 7) is
# the squared distance between F6's 84 outputs and bitmap $i$; the prediction is the nearest.

# %%
prototypes = paper.rbf_prototypes()
fig, axes = plt.subplots(1, 10, figsize=(8, 2.0))
for digit, ax in enumerate(axes):
    ax.imshow(prototypes[digit].reshape(12, 7), cmap="gray_r", vmin=-1, vmax=1)
    ax.set_title(str(digit))
    ax.set_axis_off()
fig.suptitle("the RBF prototypes (Fig. 3): 84 = 7x12, black +1, white -1", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. SDLM: a learning rate for every parameter
#
# SDLM updates after each pattern $p$, $w_k \leftarrow w_k - \varepsilon_k\, \partial E_p /
# \partial w_k$ (eq. 18), with a rate of its own for each parameter
#
# $$\varepsilon_k = \frac{\eta}{\mu + h_{kk}} \qquad \text{(eq. 21)},$$
#
# where $h_{kk}$ is the Gauss-Newton estimate of section 2, averaged over 500 training patterns
# before each pass and kept fixed during it; $\mu = 0.02$ keeps a rate finite where the
# curvature is tiny, and $\eta$ follows a schedule over the 20 passes:

# %%
print("mu =", paper.SDLM_MU, " patterns for h:", paper.SDLM_HESSIAN_SAMPLES)
print("eta schedule (passes, eta):", paper.SDLM_SCHEDULE)

# %% [markdown]
# The paper gives a check of its own: "effective learning rates during the first pass varied
# between approximately 7e-5 and 0.016 over the set of parameters". Let us compute them for the
# fresh network above. The input is normalized as in training: background (0) becomes -0.1 and
# full ink (255) 1.175 (sec. III-A), that is `pixel * (1.275 / 255) - 0.1`, and the 500
# patterns go batch-last, `(1, 32, 32, 500)`.

# %%
patterns = host.train_images[:500]  # (500, 32, 32) uint8
x500 = numpy.moveaxis(patterns, 0, -1)[None] * host.scale + host.offset
print(f"scale {host.scale:.6f} = 1.275/255, offset {host.offset}; x {x500.shape}")
print(f"background -> {x500.min():.3f}, full ink -> {x500.max():.3f}")

hessian = model.hessian_diagonal(
    params, backend.asarray(x500), backend.asarray(host.train_labels[:500], dtype=backend.xp.int64)
)
sdlm = SDLM()
state = sdlm.set_curvature({}, hessian, epoch=0)
rates = SDLM.rates(state)  # "C1.weight" -> array of rates, shaped like the parameter

weights = numpy.concatenate([r.ravel() for k, r in rates.items() if k.endswith(".weight")])
others = numpy.concatenate([r.ravel() for k, r in rates.items() if not k.endswith(".weight")])
print(
    f"first-pass rates of the {weights.size:,} weights:  {weights.min():.1e} .. {weights.max():.1e}"
)
print(f"biases and S2/S4 coefficients ({others.size}): {others.min():.1e} .. {others.max():.1e}")
print("the paper: approximately 7e-5 .. 0.016;  the largest possible, eta/mu:", 0.0005 / 0.02)

# %%
layers = list(counts)
fig, axes = plt.subplots(2, 3, figsize=(10, 5), sharex=True)
bins = numpy.geomspace(5e-6, 3e-2, 50)
for layer, ax in zip(layers, axes.flat, strict=True):
    ax.axvspan(7e-5, 0.016, color="gold", alpha=0.3)
    ax.axvline(0.0005 / 0.02, color="0.4", ls=":")
    for key, values in rates.items():
        if key.startswith(layer + "."):
            kind, v = key.split(".")[1], values.ravel()
            share = numpy.full(v.size, 1 / v.size)  # each kind's histogram sums to 1
            ax.hist(v, bins=bins, weights=share, alpha=0.8, label=f"{kind} ({v.size:,})")
    ax.set_xscale("log")
    ax.set_title(layer)
    ax.legend(fontsize=8, loc="upper left")
for ax in axes[:, 0]:
    ax.set_ylabel("fraction")
for ax in axes[1]:
    ax.set_xlabel("first-pass rate \u03b5_k")
fig.suptitle(
    "SDLM rates of a fresh LeNet-5 (h on 500 patterns, \u03b7 = 0.0005); "
    "shaded: the paper's 7e-5 to 0.016, dotted: \u03b7/\u03bc"
)
fig.tight_layout()
plt.show()

# %% [markdown]
# Every weight lands inside the paper's range or just below its lower end (printed above; the
# project's docs report 6.4e-5 to 1.2e-2 for seeds 0 and 1). Below it lie only biases and S2/S4
# coefficients of the maps, C1 to S4; C5's and F6's biases sit among their weights. Eq. 23 says
# why. A map's bias is one parameter shared by every position of the map,
# and its $h_{kk}$ sums eq. 25's term $\partial^2 E/\partial a^2\, x^2$ over all of them, with
# $x = 1$: 784 positions for a C1 map, 196 for S2, 100 for C3, 25 for S4, one for C5 and F6. A
# weight is shared as widely, but each of its terms carries its input squared, mostly small
# (most pixels are background, $x^2 = 0.01$). So a bias's $h_{kk}$ is several times its map's
# weights', large where the map is large, and its rate $\eta / (\mu + h_{kk})$ small:

# %%
for layer in layers:
    w = hessian[f"{layer}.weight"] if f"{layer}.weight" in hessian else hessian[f"{layer}.coef"]
    b = hessian[f"{layer}.bias"]
    print(
        f"{layer}: median h  weight/coef {numpy.median(w):6.3f}   bias {numpy.median(b):6.3f}"
        f"   ratio {numpy.median(b) / numpy.median(w):4.1f}"
    )
print(f"mean x^2 of the input pixels: {numpy.mean(x500**2):.3f}")

# %% [markdown]
# ## 5. A short training run
#
# `lenet5x.fit` trains as the `lenet5x train` command does: it writes a run directory (config,
# metrics, checkpoints) and returns the history and the trained network. The shipped `smoke`
# config is the paper's LeNet-5 with SDLM at a constant $\eta = 0.0005$, $h_{kk}$ on 200
# patterns, batches of 8. We give it 5,000 training digits and 4 passes (a few seconds on a
# CPU); each pass prints its SDLM rates too. The full run (`lenet5`: 60,000 digits,
# 20 passes, the paper's schedule) is what the shipped network is.

# %%
run = lenet5x.fit(
    "smoke", data_dir=DATA, out=str(WORK / "smoke"), epochs=4, **{"data.train_subset": 5000}
)
print(run.network)

# %%
epochs = [r["epoch"] for r in run.history]
fig, (loss_ax, err_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
loss_ax.plot(epochs, [r["train_loss"] for r in run.history], "o-")
loss_ax.set_title("training loss (MAP criterion, eq. 9)")
err_ax.plot(
    epochs, [100 * r["train_error"] for r in run.history], "o--", label="train (during the pass)"
)
err_ax.plot(
    epochs, [100 * r["train_error_full"] for r in run.history], "o-", label="train (after it)"
)
err_ax.plot(epochs, [100 * r["test_error"] for r in run.history], "o-", label="test (1,000 digits)")
err_ax.set_ylabel("error (%)")
err_ax.set_title("error rates")
err_ax.legend(fontsize=9)
for ax in (loss_ax, err_ax):
    ax.set_xlabel("pass")
    ax.set_xticks(epochs)
fig.tight_layout()
plt.show()

small = run.network.predict(host.test_images)
error = (small != host.test_labels).mean()
print(f"after {epochs[-1]} passes on 5,000 digits: {error:.2%} on all 10,000 test digits")

# %% [markdown]
# ### The loss, and why MAP
#
# The RBF output gives, for each class $i$, the squared distance $y_i$ between F6's 84 numbers
# and class $i$'s 7x12 bitmap (eq. 7): lower is closer. The simplest criterion, the mean squared
# error (eq. 8), only pulls the correct class's distance $y_D$ down: nothing keeps the other
# classes away, and if the bitmaps could learn they would all collapse onto one code. The
# paper's criterion (eq. 9) adds a term that pushes the *other* distances up:
#
# $$E = y_D + \log\Big(e^{-j} + \sum_i e^{-y_i}\Big)$$
#
# The second term is a soft minimum of all the distances (plus a constant "rubbish" class
# $e^{-j}$, $j = 10$ here), so lowering $E$ means bringing the right class near *and* keeping the
# wrong ones far. It is the negative log of the right class's probability when the classes'
# probabilities are proportional to $e^{-y_i}$: training maximizes the probability of the right
# answer, a *maximum a posteriori* (MAP) criterion. For one digit, by hand:

# %%
distances = net.scores(host.test_images[:1])[0]  # (10,) squared RBF distances y_i
label, j = int(host.test_labels[0]), 10.0
mse = distances[label]
map_loss = distances[label] + numpy.log(numpy.exp(-j) + numpy.exp(-distances).sum())
print("distances:", numpy.round(distances, 1), f"(true class {label})")
print(f"MSE term y_D = {mse:.2f}; MAP loss = {map_loss:.2f}: when the right class is much the")
print("nearest, the soft minimum is about y_D and cancels it; wrong classes coming near cost")
print("more: each adds its e^-y_i to the log-sum, pushing them away from the digit's F6")

# %% [markdown]
# ### SGD against SDLM
#
# The same network on the same 2,000 digits for 4 passes, once with SDLM (a learning rate per
# parameter from its curvature $h_{kk}$) and once with plain SGD with momentum at one global
# rate, 0.001 (try 0.01: it diverges; 0.0001 barely moves). SDLM needs no such search: its
# rates adapt to each layer by themselves (section 4).

# %%
curves = {}
for name, settings in {
    "SDLM (the paper's)": {},
    "SGD, momentum 0.9, rate 0.001": {
        "optimizer.name": "sgd",
        "optimizer.schedule": [[None, 1e-3]],
    },
}.items():
    trial = lenet5x.fit(
        "smoke",
        data_dir=DATA,
        out=str(WORK / name.split()[0]),
        epochs=4,
        log=lambda line: None,
        **settings,
    )
    curves[name] = [100 * r["test_error"] for r in trial.history]
fig, ax = plt.subplots(figsize=(5.5, 3.2))
for name, errors in curves.items():
    ax.plot(range(1, len(errors) + 1), errors, "o-", label=name)
ax.set_xlabel("pass")
ax.set_ylabel("test error (%, 1,000 digits)")
ax.set_xticks(range(1, 5))
ax.legend(fontsize=9)
fig.tight_layout()
plt.show()
print({name: f"{errors[-1]:.1f}%" for name, errors in curves.items()})

# %% [markdown]
# ## 6. What the layers see
#
# `net.features(image)` runs one image through the shipped network and returns every stage's
# output, after its squashing function: maps `(C, H, W)` for the convolutions and
# subsamplings, vectors for C5, F6 and the RBF distances.

# %%
index = 0
image = host.test_images[index]
stages = net.features(image)
for name, value in stages.items():
    print(f"{name:6s} {value.shape}")

# %%
rows = [("input", 1), ("C1", 1), ("S2", 1), ("C3", 2), ("S4", 2)]
fig, axes = plt.subplots(sum(n for _, n in rows), 8, figsize=(8, 8))
row = 0
for name, n_rows in rows:
    maps = stages[name]
    low, high = maps.min(), maps.max()  # one grey scale per stage
    for i in range(n_rows * 8):
        ax = axes[row + i // 8, i % 8]
        ax.set_xticks([])
        ax.set_yticks([])
        if i < len(maps):
            ax.imshow(maps[i], cmap="gray", vmin=low, vmax=high)
        else:
            ax.set_axis_off()
    axes[row, 0].set_ylabel(f"{name}\n{maps.shape[0]}@{maps.shape[1]}x{maps.shape[2]}")
    row += n_rows
fig.suptitle(f"test digit {index} (a {host.test_labels[index]}) through LeNet-5")
fig.tight_layout()
plt.show()

# %% [markdown]
# The last layers have no maps. F6's 84 outputs are meant to draw the bitmap of the right digit
# (Fig. 3): arranged as 7x12, they should look like the nearest prototype, and the RBF output
# is the squared distance to each. Here are F6's output and the prototypes of the two nearest
# classes (black +1, white -1, as above):

# %%
distances = stages["RBF"]
nearest = numpy.argsort(distances)[:2]
pictures = [("F6 output", stages["F6"])] + [
    (f"class {net.classes[c]}: distance {distances[c]:.1f}", net.prototypes[c]) for c in nearest
]
fig, axes = plt.subplots(1, 3, figsize=(6, 3.2))
for ax, (title, vector) in zip(axes, pictures, strict=True):
    ax.imshow(vector.reshape(12, 7), cmap="gray_r", vmin=-1.2, vmax=1.2)  # black +1
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
plt.show()

# %% [markdown]
# ### The learned C1 kernels
#
# `net.parameters` holds the trained weights as read-only NumPy arrays, named as in the
# checkpoint. C1's six 5x5 kernels are what the first layer looks for: red weights add the ink
# they cover, blue ones subtract it, so most kernels are small edge and stroke detectors.

# %%
kernels = net.parameters["C1.weight"][:, 0]  # (6, 5, 5)
limit = numpy.abs(kernels).max()
fig, axes = plt.subplots(1, 6, figsize=(8, 1.6))
for i, ax in enumerate(axes):
    ax.imshow(kernels[i], cmap="bwr", vmin=-limit, vmax=limit)
    ax.set_title(f"C1 map {i}", fontsize=9)
    ax.set_axis_off()
plt.show()

# %% [markdown]
# ## 7. A photo of a digit
#
# `net.predict_photo(path)` takes a picture of one handwritten digit and prepares it the way
# MNIST's digits were made: dark ink on light paper is inverted, the paper's background (a plane
# fitted to the border, so an even shadow goes too) is subtracted, the digit is cropped, fitted
# into a 20x20 box and centred by its centre of mass in 28x28, then padded to 32x32.
#
# We have no camera here, so we make a "photo" from a test digit: dark ink on grey paper,
# enlarged, with a shadow falling across the page and some sensor noise.

# %%
index = 30
digit = 255 - host.test_images[index].astype(numpy.float64)  # dark ink on white
big = numpy.asarray(Image.fromarray(digit.astype(numpy.uint8)).resize((256, 256), Image.BILINEAR))
page = numpy.full((360, 300), 255.0)
page[50:306, 22:278] = big
down, across = numpy.mgrid[0:360, 0:300]
shadow = 0.95 - 0.35 * across / 300 - 0.15 * down / 360  # light falls off across the page
photo = page / 255 * shadow * 0.9 + 0.05
photo += numpy.random.default_rng(1).normal(0, 0.03, photo.shape)
photo_path = WORK / "photo.png"
Image.fromarray(numpy.clip(photo * 255, 0, 255).astype(numpy.uint8)).save(photo_path)

prediction = net.predict_photo(photo_path)

fig, (left, right) = plt.subplots(1, 2, figsize=(7, 3.6))
left.imshow(Image.open(photo_path), cmap="gray", vmin=0, vmax=255)
left.set_title("the photo (PNG)")
right.imshow(prediction.input, cmap="gray", vmin=0, vmax=255)
right.set_title(f"what the network saw: {prediction.input.shape}")
for ax in (left, right):
    ax.set_axis_off()
plt.show()

print(f"true label {host.test_labels[index]}, predicted {prediction.label}")
print(f"inverted (dark ink on light paper): {prediction.inverted}")
print(f"scores ({prediction.score_kind}: lower is closer):")
for name, score in sorted(
    zip(net.classes, prediction.scores, strict=True), key=lambda pair: pair[1]
):
    print(f"  {name}: {score:7.1f}")

# %% [markdown]
# ## Exercises
#
# Write your answer in the cell below each question, then run the check cell at the end (a
# teacher can hide or delete it before handing the notebook out).
#
# 1. How many trainable parameters does C3 have? Table I connects 60 (input, output) map pairs
#    by 5x5 kernels, and each of the 16 output maps has a bias.
# 2. How many connections (multiply-adds) does S2 have? Each of its 6x14x14 units sums a 2x2
#    block, multiplies by its map's coefficient and adds its map's bias: count one connection
#    per input and one for the bias.
# 3. SDLM's rate for a parameter is $\epsilon_k = \eta / (\mu + h_{kk})$ (eq. 21). With
#    $\eta = 0.0005$ and $\mu = 0.02$, what is the rate of a parameter whose $h_{kk}$ is 0.48?
# 4. How many of the first 1,000 test digits does the shipped LeNet-5 misread? (`net.predict`)

# %%
answer_1 = None  # C3's trainable parameters
answer_2 = None  # S2's connections
answer_3 = None  # the rate
answer_4 = None  # misread digits among the first 1,000

# %%
# the check (a teacher can hide this cell): the answers are computed, not written down
table = {row.name: row for row in net.layers}
truth = {
    1: table["C3"].parameters,
    2: table["S2"].connections,
    3: 0.0005 / (0.02 + 0.48),
    4: int((net.predict(host.test_images[:1000]) != host.test_labels[:1000]).sum()),
}
for question, (answer, right) in enumerate(
    zip([answer_1, answer_2, answer_3, answer_4], truth.values(), strict=True), start=1
):
    if answer is None:
        verdict = "not answered yet"
    else:
        verdict = "right" if numpy.isclose(answer, right, rtol=1e-6) else "not yet: try again"
    print(f"question {question}: {verdict}")

# %% [markdown]
# ## Where to go next
#
# - `lenet5x train` (or `lenet5x.fit("lenet5")`) trains the full paper's network: 20 passes, the
#   paper's schedule, about 0.9% test error.
# - `lenet5x.load("lenet5").predict_photo("my_digit.jpg")` on a photo of your own handwriting.
# - The layers in `lenet5x/layers/` are each one short file, with the forward, backward and
#   second-derivative passes side by side: read them beside the paper's appendix C.

# %%
WORK_DIR.cleanup()  # the run directory and the photo: nothing is left behind
