"""Data sets as numpy arrays, found (or downloaded, and verified) exactly as `lenet5 train` finds them.

    from lenet5 import datasets
    (x_train, y_train), (x_test, y_test) = datasets.load("mnist", root="data")
    model.predict(x_test)          # uint8 [N, 28, 28]; labels int64 [N]
"""

from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from . import _lenet5


class Dataset(NamedTuple):
    """A data set's two splits, each `(images, labels)`: images uint8 `[N, 28, 28]` (grey levels 0-255), labels
    int64 `[N]`; and the names of its classes. Unpacks as `(train, test)` pairs' first two fields."""

    train: Tuple[np.ndarray, np.ndarray]
    test: Tuple[np.ndarray, np.ndarray]
    class_names: List[str]

    def __iter__(self):
        # `(x_train, y_train), (x_test, y_test) = load(...)`, as Keras users write it.
        return iter((self.train, self.test))


def load(name: str = "mnist", root: Optional[str] = None, *, download: bool = True) -> Dataset:
    """`name`: `mnist`, `fashion-mnist`, a directory of IDX files or an image folder, under the data root `root`
    (default: $LENET5_DATA, else ./data). A known data set that is missing is downloaded (unless `download` is
    False) from the mirrors torchvision uses, and every known data set is checked to be its published files."""
    d = _lenet5.load_dataset(str(name), None if root is None else str(root), download)
    return Dataset((d["train_images"], d["train_labels"]), (d["test_images"], d["test_labels"]), d["class_names"])
