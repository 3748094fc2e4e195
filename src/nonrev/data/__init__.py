"""Data: array, label and matrix files (:mod:`.files`) and training data sets with
splits and normalisation (:mod:`.datasets`)."""

from nonrev.data.datasets import Dataset, Normaliser, load_dataset, write_image_grid
from nonrev.data.files import (
    ledoit_wolf_shrinkage,
    load_array,
    load_labels,
    load_square_matrix,
    u_from_data,
)

__all__ = [
    "Dataset",
    "Normaliser",
    "ledoit_wolf_shrinkage",
    "load_array",
    "load_dataset",
    "load_labels",
    "load_square_matrix",
    "u_from_data",
    "write_image_grid",
]
