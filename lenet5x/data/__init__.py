"""MNIST-format data: IDX files, where to find or download them, preprocessing, device batches."""

from .idx import DataError, read_idx_images, read_idx_labels
from .loading import DeviceData, HostDataset, load_dataset
from .sources import DATASETS, locate_or_download

__all__ = [
    "DATASETS",
    "DataError",
    "DeviceData",
    "HostDataset",
    "load_dataset",
    "locate_or_download",
    "read_idx_images",
    "read_idx_labels",
]
