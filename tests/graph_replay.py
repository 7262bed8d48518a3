"""CUDA graphs simulated on the CPU, to test backend.GraphedFunction where no GPU is.

While a graph is captured, every PyTorch operation is recorded (a TorchDispatchMode) and run;
replay() runs the recorded operations again on the same tensors, writing each result into the
tensor the capture produced: what a CUDA graph does with its memory. What a real capture refuses
and a CPU would not notice fails here too: a tensor made from host data (a Python number through
array-api-compat, torch.tensor) or a value read back to the host (.item(), bool(tensor)).
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

REFUSED = {
    torch.ops.aten.lift_fresh.default: "a tensor made from host data",
    torch.ops.aten._local_scalar_dense.default: "a value read back to the host",
}


class Graph:
    def __init__(self) -> None:
        self.ops: list = []

    def replay(self) -> None:
        for func, args, kwargs, out in self.ops:
            new = func(*args, **kwargs)
            for old, fresh in zip(pytree.tree_leaves(out), pytree.tree_leaves(new), strict=True):
                if isinstance(old, torch.Tensor) and old.data_ptr() != fresh.data_ptr():
                    old.copy_(fresh)


class _Recorder(TorchDispatchMode):
    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph = graph

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in REFUSED:
            raise RuntimeError(f"a CUDA graph cannot capture {REFUSED[func]} ({func})")
        out = func(*args, **(kwargs or {}))
        self.graph.ops.append((func, args, kwargs or {}, out))
        return out


class _Stream:
    def wait_stream(self, other) -> None:
        pass


def simulate(monkeypatch) -> None:
    """Make torch.cuda's graph and stream calls the simulation's, for one test."""
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", lambda graph: _Recorder(graph))
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: _Stream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
