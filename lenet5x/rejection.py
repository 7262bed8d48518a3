"""Rejection: when a network should answer "not sure", "not a digit" or "no ink found".

The paper (sec. III-D, Fig. 10) compares classifiers by the share of test patterns that must be
rejected to reach 0.5% error, rejecting a pattern when "the difference between the scores of the
top two classes" is below a threshold. The score here is one quantity for both models, an energy
(lower is better): the RBF distance y_i of the paper's model (eqs. 7-9: the MAP criterion reads
y_i as minus a log-likelihood, p_i ~ exp(-y_i)), and minus the log-probability -log p_i of the
softmax model. The MARGIN is the gap between the two lowest energies, y_2nd - y_1st >= 0, in
nats: for softmax log p_1st - log p_2nd, which is also the gap between the two largest logits
(the softmax's normaliser cancels), unlike p_1st - p_2nd, which squeezes every clear answer
into [0.9, 1]. The one definition is `margin` below; every tool uses it.

Three refusals, in this order of precedence (code -1 in place of a class):
  - "no ink found": fewer than MIN_INK_PIXELS pixels of at least half intensity (blank pages);
  - "not a digit" (RBF models only): the nearest RBF distance is above a limit taken from the
    training digits' own nearest distances (their DISTANCE_QUANTILE quantile), the paper's
    second, absolute signal (sec. II-B): F6 lies far from every prototype;
  - "not sure (a or b)": the margin is below the threshold chosen on a validation split held
    out of training (`choose_threshold`, never on the test set) for the target TARGET_ERROR.
The thresholds live in a network's metadata (export.py writes them; `limits_of` reads them).
"""

from __future__ import annotations

import dataclasses

import numpy

TARGET_ERROR = 0.005  # the paper's Fig. 10: the error reached on what is accepted
REPORTED_ERRORS = (0.005, 0.001)  # the shares rejected that evaluate --reject reports
DISTANCE_QUANTILE = 0.999  # of the training digits' nearest RBF distances: the "not a digit" limit
MIN_INK_PIXELS = 5  # an image with fewer pixels >= 128 (of 255) holds no ink
NO_INK, NOT_A_DIGIT, NOT_SURE = "no ink found", "not a digit", "not sure"


def energies(scores: numpy.ndarray, kind: str) -> numpy.ndarray:
    """(N, K) scores of kind "rbf_distance" (as they are) or "probability" (-log p, with p
    clipped at the smallest float64) -> (N, K) energies, lower is better."""
    scores = numpy.asarray(scores, dtype=numpy.float64)
    if kind == "probability":
        return -numpy.log(numpy.maximum(scores, numpy.finfo(numpy.float64).tiny))
    if kind == "rbf_distance":
        return scores
    raise ValueError(f"unknown score kind {kind!r}")


def top_two(scores: numpy.ndarray, kind: str) -> numpy.ndarray:
    """(N, K) scores -> (N, 2) the best class and the runner-up (lowest energies first)."""
    return numpy.argsort(energies(scores, kind), axis=1, kind="stable")[:, :2]


def margin(scores: numpy.ndarray, kind: str) -> numpy.ndarray:
    """(N, K) scores -> (N,) the top-two margin y_2nd - y_1st >= 0 of the energies (higher =
    surer): the gap between the two smallest RBF distances, or log p_1st - log p_2nd."""
    ordered = numpy.sort(energies(scores, kind), axis=1)
    return ordered[:, 1] - ordered[:, 0]


def shares(scores: numpy.ndarray, kind: str, j: float | None) -> numpy.ndarray:
    """(N, K) scores -> (N, K) each class's share of belief, summing to at most 1, that a bar
    may show: softmax probabilities as they are; for RBF distances the MAP criterion's own
    posterior (eq. 9) exp(-y_i) / (exp(-j) + sum_k exp(-y_k)), where exp(-j) is the paper's
    "rubbish" class (j: the model's map_j; None: without it). Far from every prototype, no class
    gets much."""
    if kind == "probability":
        return numpy.asarray(scores, dtype=numpy.float64)
    y = numpy.asarray(scores, dtype=numpy.float64)
    low = y.min(axis=1, keepdims=True)
    if j is not None:
        low = numpy.minimum(low, j)
    weights = numpy.exp(low - y)
    rubbish = numpy.exp(low - j) if j is not None else 0.0
    return weights / (weights.sum(axis=1, keepdims=True) + rubbish)


@dataclasses.dataclass(frozen=True)
class Curve:
    """The error-rejection curve: rejecting the patterns with the lowest margins, at each cut.

    rejected (M,): the share rejected; error (M,): the error on the accepted (wrong accepted /
    accepted); threshold (M,): the margin t that makes this cut (reject margin < t)."""

    rejected: numpy.ndarray
    error: numpy.ndarray
    threshold: numpy.ndarray

    def rejected_at(self, target: float) -> float | None:
        """The smallest share rejected that brings the error on the accepted to `target` or
        below (the paper's Fig. 10 number for 0.005); None where no cut does."""
        index = self.cut_at(target)
        return None if index is None else float(self.rejected[index])

    def cut_at(self, target: float) -> int | None:
        reached = numpy.flatnonzero(self.error <= target)
        return int(reached[0]) if len(reached) else None


def rejection_curve(margins: numpy.ndarray, wrong: numpy.ndarray) -> Curve:
    """(N,) margins, (N,) bool misclassified -> the Curve over every cut between distinct
    margins (patterns with equal margins are rejected together), from rejecting none to all
    but the surest ones."""
    order = numpy.argsort(margins, kind="stable")
    m, w = numpy.asarray(margins, dtype=numpy.float64)[order], numpy.asarray(wrong)[order]
    n = len(m)
    if n == 0:
        return Curve(*(numpy.zeros(0) for _ in range(3)))
    cuts = numpy.concatenate([[0], numpy.flatnonzero(m[1:] > m[:-1]) + 1])  # k rejected
    wrong_rejected = numpy.concatenate([[0], numpy.cumsum(w)])[cuts]
    error = (w.sum() - wrong_rejected) / (n - cuts)
    return Curve(cuts / n, error, m[cuts])


def choose_threshold(margins: numpy.ndarray, wrong: numpy.ndarray, target: float) -> float:
    """The "not sure" threshold: the smallest margin threshold that brings the error on the
    accepted to `target` on these patterns (a validation split, never the test set); where no
    cut does, the largest margin (all but the surest are refused)."""
    curve = rejection_curve(margins, wrong)
    index = curve.cut_at(target)
    return float(curve.threshold[-1] if index is None else curve.threshold[index])


def distance_limit(distances: numpy.ndarray, quantile: float = DISTANCE_QUANTILE) -> float:
    """(N, K) RBF distances of training digits -> the "not a digit" limit: the `quantile` of
    their nearest distances."""
    return float(numpy.quantile(numpy.min(distances, axis=1), quantile))


def no_ink(images: numpy.ndarray) -> numpy.ndarray:
    """(N, H, W) uint8 digits -> (N,) bool: fewer than MIN_INK_PIXELS pixels >= 128. Judged on
    the digits as a picture gives them (28x28, or padded to 32x32), before a network's own
    preparation: LeNet-1's 16x16 shrinking fades a thin stroke below 128."""
    return (numpy.asarray(images) >= 128).sum(axis=(1, 2)) < MIN_INK_PIXELS


@dataclasses.dataclass(frozen=True)
class Limits:
    """A network's refusal thresholds (None: not set, that refusal is never made)."""

    margin: float | None = None  # "not sure" below this top-two margin
    distance: float | None = None  # "not a digit" above this nearest RBF distance


def limits_of(meta: dict) -> Limits:
    """The thresholds a network's metadata stores (export.py: reject_margin, not_digit_distance)."""
    return Limits(meta.get("reject_margin"), meta.get("not_digit_distance"))


def describe_limits(meta: dict) -> str:
    """The refusal thresholds a network's metadata stores, in words (export, evaluate --reject)."""
    if "reject_margin" not in meta:  # a run's checkpoint: export.py chooses the thresholds
        sure = "no 'not sure' threshold yet (`lenet5x export` chooses it on a validation split)"
    elif meta["reject_margin"] is None:
        sure = "no 'not sure' threshold (the run held out no validation split)"
    else:
        sure = (
            f"'not sure' below a top-two margin of {meta['reject_margin']:.3f} (chosen on "
            f"{meta['reject_validation_size']:,} validation images for "
            f"{meta['reject_target_error']:.1%} error on the accepted; it refuses "
            f"{meta['reject_validation_share']:.2%} of them)"
        )
    if meta.get("not_digit_distance") is None:
        return sure
    return (
        f"{sure}; 'not a digit' above a nearest RBF distance of {meta['not_digit_distance']:.2f} "
        f"(the {meta['not_digit_quantile']:.1%} quantile of the training digits' own)"
    )


@dataclasses.dataclass(frozen=True)
class Decisions:
    """What to answer for N images: labels (N,) int64, a class or -1 (refused); reasons (N,)
    "" for an answer, else "no ink found", "not a digit" or "not sure (a or b)"; runner_up
    (N,) the second class; margin (N,) the top-two margin."""

    labels: numpy.ndarray
    reasons: list[str]
    runner_up: numpy.ndarray
    margin: numpy.ndarray


def decide(scores, kind: str, limits: Limits, classes, blank=None) -> Decisions:
    """(N, K) scores -> Decisions under `limits`; blank: (N,) bool images with no ink (no_ink)."""
    pairs, margins = top_two(scores, kind), margin(scores, kind)
    nearest = energies(scores, kind).min(axis=1)
    blank = numpy.zeros(len(margins), dtype=bool) if blank is None else numpy.asarray(blank)
    reasons = []
    for i, (first, second) in enumerate(pairs):
        if blank[i]:
            reasons.append(NO_INK)
        elif (
            kind == "rbf_distance" and limits.distance is not None and nearest[i] > limits.distance
        ):
            reasons.append(NOT_A_DIGIT)
        elif limits.margin is not None and margins[i] < limits.margin:
            reasons.append(f"{NOT_SURE} ({classes[first]} or {classes[second]})")
        else:
            reasons.append("")
    labels = numpy.where([r == "" for r in reasons], pairs[:, 0], -1).astype(numpy.int64)
    return Decisions(labels, reasons, pairs[:, 1].astype(numpy.int64), margins)
