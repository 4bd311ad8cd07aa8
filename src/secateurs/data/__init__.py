"""Datasets for the CLI and benchmarks: loaders for Fashion-MNIST, MNIST, CIFAR-10/100 and synthetic data.

The library itself is model- and data-agnostic; this subpackage is the small zoo the command line and the
benchmarks train on. Entry point: :func:`build_data`, which returns a :class:`DataBundle` of in-memory
:class:`TensorLoader` objects.
"""

from secateurs.data.cifar import load_cifar, load_cifar10, load_cifar100
from secateurs.data.idx import IdxFiles, find_idx_files, read_idx, write_idx
from secateurs.data.loader import Augment, TensorLoader, epoch_generator, random_crop, random_hflip
from secateurs.data.mnist_like import load_fashion_mnist, load_mnist, load_mnist_like
from secateurs.data.paths import cache_dir, data_root
from secateurs.data.registry import (
    DataBundle,
    DatasetSpec,
    build_data,
    describe_datasets,
    get_dataset,
    list_datasets,
    register_dataset,
)
from secateurs.data.splits import ImageSplits
from secateurs.data.synthetic import make_synthetic

__all__ = [
    "Augment",
    "DataBundle",
    "DatasetSpec",
    "IdxFiles",
    "ImageSplits",
    "TensorLoader",
    "build_data",
    "cache_dir",
    "data_root",
    "describe_datasets",
    "epoch_generator",
    "find_idx_files",
    "get_dataset",
    "list_datasets",
    "load_cifar",
    "load_cifar10",
    "load_cifar100",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist_like",
    "make_synthetic",
    "random_crop",
    "random_hflip",
    "read_idx",
    "register_dataset",
    "write_idx",
]
