"""Data: sources (ImageFolder, CIFAR pickle, digits), cache, splits, in-memory batches."""

from alphaprune.data.augment import augment_batch, normalize
from alphaprune.data.loader import BatchLoader
from alphaprune.data.sources import Dataset, load_dataset
from alphaprune.data.splits import Splits, make_splits, rotate_fold, stratified_subset

__all__ = [
    "BatchLoader", "Dataset", "Splits", "augment_batch", "load_dataset", "make_splits",
    "normalize", "rotate_fold", "stratified_subset",
]
