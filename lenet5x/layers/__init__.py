"""One file per kind of layer; see base.py for the four passes every layer has."""

from .activation import ReLU, ScaledTanh
from .base import Layer
from .batchnorm import BatchNorm
from .conv import Conv2D
from .convpool import ConvMaxPool
from .full import Flatten, FullyConnected
from .pool import MaxPool2x2
from .rbf import EuclideanRBF
from .subsample import AvgPool2x2, Subsampling

__all__ = [
    "AvgPool2x2",
    "BatchNorm",
    "Conv2D",
    "ConvMaxPool",
    "EuclideanRBF",
    "Flatten",
    "FullyConnected",
    "Layer",
    "MaxPool2x2",
    "ReLU",
    "ScaledTanh",
    "Subsampling",
]
