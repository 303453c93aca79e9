"""Type hints of the native module; the docstrings of `lenet5.train` and `lenet5.Model` hold the details."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str
PARAMETER_NAMES: List[str]
# The share of the training images that tuning holds out to choose on when val_split is not given.
TUNING_VAL_SPLIT: float

_Path = Union[str, "os.PathLike[str]"]
EpochRecord = Dict[str, Any]
"""One epoch: epoch, train_loss, train_acc, val_loss, val_acc, lr, train_seconds, val_seconds (and, given to
`on_epoch`, new_best)."""

class Error(Exception):
    """An error of lenet5: a file that cannot be read or is not what it should be, a missing data set, a run that
    cannot start or diverged. The message is one line that names the file and what was expected."""

class SettingError(Error):
    """A setting (a keyword argument) out of its range."""

def load_dataset(dataset: str, data: Optional[str] = None, download: bool = True) -> Dict[str, Any]:
    """A data set as numpy arrays (see `lenet5.datasets.load`)."""

def settings() -> List[Dict[str, Any]]:
    """Every setting of a run, in order: dicts of name, default (None where unset), unset (what leaving it unset
    means, or None) and help."""

def presets() -> List[Dict[str, Any]]:
    """Every preset of `train(preset=...)` (as `lenet5 train --preset`): dicts of name, help and settings."""

def train(
    *,
    preset: Optional[str] = None,
    config: Optional[Union[_Path, Mapping[str, Any]]] = None,
    on_epoch: Optional[Callable[[EpochRecord], Optional[bool]]] = None,
    train_data: Optional[Tuple[npt.ArrayLike, npt.ArrayLike]] = None,
    test_data: Optional[Tuple[npt.ArrayLike, npt.ArrayLike]] = None,
    class_names: Optional[List[str]] = None,
    # The run's settings: their defaults are the specification's (`lenet5.settings()`), written nowhere else.
    epochs: int = ...,
    batch_size: int = ...,
    lr: float = ...,
    momentum: float = ...,
    weight_decay: float = ...,
    seed: int = ...,
    head: str = ...,
    lr_schedule: str = ...,
    step_size: int = ...,
    gamma: float = ...,
    warmup_epochs: Optional[int] = ...,
    lr_per_batch: bool = ...,
    label_smoothing: float = ...,
    eval_every: int = ...,
    patience: Optional[int] = ...,
    augment: bool = ...,
    rotate: float = ...,
    shift: float = ...,
    scale: Tuple[float, float] = ...,
    data: Optional[_Path] = ...,
    dataset: Optional[_Path] = ...,
    no_download: bool = ...,
    preprocess: Optional[str] = ...,
    val_split: Optional[float] = ...,
    split_seed: Optional[int] = ...,
    label_offset: Optional[int] = ...,
    skip_bad_images: bool = ...,
    train_limit: Optional[int] = ...,
    test_limit: Optional[int] = ...,
    threads: Optional[int] = ...,
    out: _Path = ...,
    force: bool = ...,
    resume: Optional[_Path] = ...,
    init_weights: Optional[_Path] = ...,
) -> Tuple[List[EpochRecord], str, Optional[int]]:
    """Trains LeNet-5 as `lenet5 train` does, from the same run specification (the recipe by default: 50
    epochs, batch 16, SGD lr 1e-3 momentum 0.9, sigmoid head, on MNIST), writing the same run directory `out`
    (best.safetensors, last.safetensors, metrics.jsonl, config.json). Returns one dict per finished epoch.

    Every setting of `lenet5 train` is a keyword of the same name; `lenet5.settings()` lists them with their
    defaults and help. `config` is a specification file (TOML, or JSON such as a run's config.json) or a dict;
    keywords override it. `preset` (`"fast"`: 99% on MNIST in seconds; `presets()` lists them) starts from a named
    set of settings, which `config` and keywords override. An unknown keyword raises TypeError naming the closest setting.

    `train_data=(images, labels)` and `test_data=(images, labels)` train on numpy arrays instead (images
    [N, 28, 28] or [N, 1, 28, 28], uint8 or those bytes / 255; labels N integers), with `class_names`
    (default: the labels' numbers). A run on arrays resumes only on the same arrays.

    `on_epoch(record)` is called after every epoch; returning False stops the run there (resumable with
    `resume=out`), and an exception it raises stops the run and is raised again. Ctrl-C stops the run.

    Raises `SettingError` for a setting out of range and `Error` for anything else the run cannot do."""

class Model:
    """Trained LeNet-5 weights."""

    @staticmethod
    def load(path: _Path, *, head: str = "sigmoid") -> Union[Model, Int8Model]:
        """Reads a .safetensors checkpoint (written by `lenet5 train` or `Model.save`) or a PyTorch .pth
        state_dict, which is read with `head` ("sigmoid" or "logits"); an int8 file (`lenet5 quantize`,
        `Int8Model.save`) is read as an `Int8Model`."""
    @staticmethod
    def from_state_dict(
        state_dict: Mapping[str, Any], *, head: str = "sigmoid", class_names: Optional[List[str]] = None
    ) -> Model:
        """Weights from PyTorch's state_dict names and shapes (numpy arrays, or anything numpy reads)."""
    def predict(
        self, images: Any, *, preprocess: Optional[str] = None, scale: Optional[float] = None
    ) -> npt.NDArray[np.int64]:
        """The class index of each image: `images` is [N, 28, 28] or [N, 1, 28, 28], float in [0, 1] or uint8.
        With `preprocess` ("mnist", "resize" or "none"), grey pictures of any size (a list of 2-D arrays or
        [N, H, W]) prepared as `lenet5 predict` prepares image files."""
    def scores(
        self, images: Any, *, preprocess: Optional[str] = None, scale: Optional[float] = None
    ) -> npt.NDArray[np.float32]:
        """The network's outputs, [N, K]: sigmoid outputs (sigmoid head) or logits (logits head)."""
    def evaluate(
        self,
        images: Any,
        labels: Any,
        *,
        batch_size: Optional[int] = None,
        threads: Optional[int] = None,
        scale: Optional[float] = None,
    ) -> Dict[str, Any]:
        """Loss, accuracy, correct and total on labelled images, as `lenet5 eval` reports them (floats must be
        bytes / 255; the loss is the mean of per-batch means)."""
    def state_dict(self) -> Dict[str, npt.NDArray[np.float32]]:
        """The weights by PyTorch's state_dict names, with its shapes, in its order."""
    def save(self, path: _Path) -> None:
        """Writes a .safetensors checkpoint (atomically) that `lenet5 eval` and `Model.load` read."""
    def quantize(
        self,
        *,
        calibration: int = 1000,
        seed: int = 0,
        images: Any = None,
        data: Optional[_Path] = None,
        dataset: Optional[str] = None,
    ) -> Int8Model:
        """The network in int8, as `lenet5 quantize`: activations calibrated on `calibration` of `images`, or of
        the training images of the data set the weights were trained on (or `dataset` under `data`)."""
    def export_c(
        self,
        dir: _Path,
        *,
        force: bool = False,
        calibration: int = 1000,
        seed: int = 0,
        images: Any = None,
        data: Optional[_Path] = None,
        dataset: Optional[str] = None,
    ) -> Tuple[str, str]:
        """`quantize(...)`, then `Int8Model.export_c(dir, force=force)`."""
    @property
    def class_names(self) -> List[str]: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def head(self) -> str: ...
    @property
    def metadata(self) -> Dict[str, str]: ...

class Int8Model:
    """A LeNet-5 quantized to int8, run with integers only (`Model.quantize`, or `Model.load` of an int8 file)."""

    @staticmethod
    def load(path: _Path) -> Int8Model:
        """Reads a file `lenet5 quantize` or `Int8Model.save` wrote."""
    def save(self, path: _Path) -> None:
        """Writes the int8 network (safetensors), read by `lenet5 eval`, `lenet5 export --c` and `Model.load`."""
    def export_c(self, dir: _Path, *, force: bool = False) -> Tuple[str, str]:
        """Writes lenet5_model.h and lenet5_model.c (C99) into `dir`, as `lenet5 export --c`."""
    def predict(self, images: Any, *, scale: Optional[float] = None) -> npt.NDArray[np.int64]:
        """The class index of each image, images as `Model.predict` takes them."""
    def scores(self, images: Any, *, scale: Optional[float] = None) -> npt.NDArray[np.int32]:
        """The int32 scores, [N, K]: `scores_scale` times a score is the logit."""
    def evaluate(
        self,
        images: Any,
        labels: Any,
        *,
        batch_size: Optional[int] = None,
        threads: Optional[int] = None,
        scale: Optional[float] = None,
    ) -> Dict[str, Any]:
        """Loss, accuracy, correct and total, as `lenet5 eval` reports them for an int8 file."""
    @property
    def class_names(self) -> List[str]: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def head(self) -> str: ...
    @property
    def scores_scale(self) -> float: ...
    @property
    def metadata(self) -> Dict[str, str]: ...
