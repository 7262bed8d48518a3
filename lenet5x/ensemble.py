"""Boosted LeNet-4 as one model: three member networks and a gate, with the Model's face.

The paper (sec. III-C, after Drucker, Schapire and Simard 1993): "at test time the outputs of the
three nets are added" and, when the first net's answer is confident, the other two are not called,
so the ensemble costs on average 1.75 times one net. Here the first net's confidence is its top-two
margin (rejection.margin, the one definition the tools use) and the gate a threshold t on it:

    out = out1 + out2 + out3   where margin(out1) < t  (nets 2 and 3 run only on these)
    out = 3 * out1             elsewhere                (the sum's scale, net 1's answer)

Parameters are one flat dict as for any model: "net1/C1.weight", ..., "net3/RBF.prototypes", and
"gate/threshold" (a float64 scalar, chosen by boosting.choose_gate; neither trained nor a fixed
constant). Tools that walk a network's layers (features) see net 1's.
"""

from __future__ import annotations

from typing import Any

import numpy

from .arrays import array_namespace, device
from .backend import to_numpy
from .rejection import margin
from .summary import Row, layer_table

MEMBERS = ("net1", "net2", "net3")
GATE = "gate/threshold"


def member_scores(out, kind: str) -> numpy.ndarray:
    """A network's output (K, N) -> host (N, K) scores of `kind`: RBF distances as they are, or
    softmax probabilities (restore.scores for any restored network)."""
    values = to_numpy(out).astype(numpy.float64).T
    if kind == "probability":
        values = numpy.exp(values - values.max(axis=1, keepdims=True))
        return values / values.sum(axis=1, keepdims=True)
    return values


class Ensemble:
    """Three members of one architecture (`member`, a model.Model) summed behind a gate.

    consulted_share: the share of MNIST's test set on which nets 2 and 3 are called, as the
    checkpoint records it (for the layer table's multiply-adds); None where not yet measured."""

    def __init__(self, member, consulted_share: float | None = None) -> None:
        self.member = member
        self.consulted_share = consulted_share
        self.loss = member.loss
        self.input_shape = member.input_shape
        self.layers = member.layers  # net 1's, for the tools that walk them (features)
        self.shapes = member.shapes
        self.description = f"boosted {member.description}: 3 nets, summed behind a gate"
        self.paper = None  # the paper's counts (Figs. 11, 12) are in benchmarks/family_table.py
        self.has_state = False
        self.kind = "probability" if member.loss.name == "cross_entropy" else "rbf_distance"

    # -- parameters ---------------------------------------------------------------------------
    def init(self, rng: numpy.random.Generator, backend) -> dict[str, Any]:
        params = {
            f"{net}/{k}": v for net in MEMBERS for k, v in self.member.init(rng, backend).items()
        }
        params[GATE] = backend.asarray(numpy.float64(0.0), dtype=backend.xp.float64)
        return params

    @staticmethod
    def split(params) -> dict[str, dict[str, Any]]:
        """{"net1/C1.weight": w, ...} -> {"net1": {"C1.weight": w, ...}, ...}"""
        return {net: {k[len(net) + 1 :]: v for k, v in params.items() if k.startswith(net + "/")}
                for net in MEMBERS}  # fmt: skip

    @staticmethod
    def join(members: list[dict]) -> dict[str, Any]:
        """Three members' params -> the ensemble's (without the gate)."""
        return {
            f"{net}/{k}": v for net, p in zip(MEMBERS, members, strict=True) for k, v in p.items()
        }

    @property
    def trainable_keys(self) -> list[str]:
        return [f"{net}/{k}" for net in MEMBERS for k in self.member.trainable_keys]

    @property
    def buffer_keys(self) -> list[str]:
        return [GATE]

    def constants(self, params) -> dict[str, Any]:
        split = self.split(params)
        return {f"{n}/{k}": v for n in MEMBERS for k, v in self.member.constants(split[n]).items()}

    def parameter_count(self, params) -> dict[str, int]:
        """Trainable parameters per member net."""
        split = self.split(params)
        return {n: sum(self.member.parameter_count(split[n]).values()) for n in MEMBERS}

    def by_layer(self, params) -> dict[str, dict[str, Any]]:
        """Net 1's layers (with self.layers: what features shows)."""
        return self.member.by_layer(self.split(params)["net1"])

    # -- passes -------------------------------------------------------------------------------
    def consulted(self, params, out1) -> numpy.ndarray:
        """Net 1's output (K, N) -> host (N,) bool: the patterns whose margin is below the gate's
        threshold, on which nets 2 and 3 are called."""
        threshold = float(to_numpy(params[GATE]))
        return margin(member_scores(out1, self.kind), self.kind) < threshold

    def forward(self, params, x, train: bool = False) -> tuple:
        """x: (C, H, W, N) -> the gated sum (K, N), None (no caches: nothing here trains)."""
        xp = array_namespace(x)
        split = self.split(params)
        out1, _ = self.member.forward(split["net1"], x)
        ask = numpy.flatnonzero(self.consulted(params, out1))
        if len(ask) == 0:
            return 3 * out1, None
        n = out1.shape[1]
        index = xp.asarray(ask, dtype=xp.int64, device=device(x))
        sub = xp.take(x, index, axis=3)
        total = xp.take(out1, index, axis=1)
        for net in MEMBERS[1:]:
            total = total + self.member.forward(split[net], sub)[0]
        # every column from [3 * out1 | the sums of the consulted], in the patterns' order
        where = numpy.arange(n)
        where[ask] = n + numpy.arange(len(ask))
        both = xp.concat([3 * out1, total], axis=1)
        return xp.take(both, xp.asarray(where, dtype=xp.int64, device=device(x)), axis=1), None

    def full_sum(self, params, x) -> Any:
        """x -> out1 + out2 + out3 (K, N) on every pattern (what the gate is chosen against)."""
        split = self.split(params)
        outs = [self.member.forward(split[net], x)[0] for net in MEMBERS]
        return outs[0] + outs[1] + outs[2]

    def predict(self, params, x) -> Any:
        return self.loss.predict(self.forward(params, x)[0])

    # -- costs ----------------------------------------------------------------------------------
    def layer_table(self, params) -> list[Row]:
        """One row per member: its parameters, and its multiply-adds per pattern weighted by how
        often it is called (net 1 always; nets 2 and 3 on the consulted share). The totals are
        the ensemble's parameters (the sum) and cost ratio x one net's multiply-adds."""
        split = self.split(params)
        rows = layer_table(self.member, split["net1"])
        one = sum(r.connections for r in rows)
        params_one = sum(r.parameters for r in rows)
        share = self.consulted_share
        called = "where net 1 is not sure" + ("" if share is None else f" ({share:.1%})")
        out = rows[-1].shape if rows else ()
        what = self.member.description.split(" (")[0]
        return [
            Row("net1", f"{what}, always called", out, params_one, one),
            *(
                Row(
                    net,
                    f"{what}, {called}",
                    out,
                    params_one,
                    one if share is None else round(share * one),
                )  # fmt: skip
                for net in MEMBERS[1:]
            ),
        ]


def gating_cost(restored, images_u8: numpy.ndarray, batch: int = 1000) -> float:
    """The cost ratio 1 + 2 * share on these images (N, S, S) uint8: one net always, two more on
    the share whose net-1 margin is below the gate (the paper's 1.75 on MNIST's test set)."""
    from .restore import input_normalization, network_input

    model = restored.model
    if not isinstance(model, Ensemble):
        return 1.0
    scale, offset = input_normalization(restored)
    net1 = model.split(restored.params)["net1"]
    asked = 0
    for start in range(0, len(images_u8), batch):
        x = network_input(restored, images_u8[start : start + batch], scale, offset)
        asked += int(model.consulted(restored.params, model.member.forward(net1, x)[0]).sum())
    return 1.0 + 2.0 * asked / max(len(images_u8), 1)


def costs(restored) -> tuple[int, int]:
    """(trainable parameters, multiply-adds per pattern) of a restored network: the totals of its
    layer table (for an ensemble: the three nets' parameters, and the cost ratio on MNIST's test
    set x one net's multiply-adds)."""
    rows = layer_table(restored.model, restored.params)
    return sum(r.parameters for r in rows), sum(r.connections for r in rows)
