"""LeNet-5 on MNIST-style images: the PyTorch tutorial's recipe, trained by a native engine.

    import lenet5
    result = lenet5.train(epochs=5, out="runs/a", progress=True)   # the recipe, 5 epochs
    result.best, result.model                                       # the best epoch's figures, its weights
    model = lenet5.Model.load("runs/a/best.safetensors")
    classes = model.predict(images)      # a [28, 28] image or a batch, numpy, torch (CPU), PIL or lists

`train` takes the settings of `lenet5 train` as keyword arguments (or a `config` file, or a `preset`) and calls
`on_epoch` after every epoch; `settings()` lists them with their defaults, `presets()` the presets;
`Model` predicts, gives PyTorch's `state_dict` as numpy arrays, and saves checkpoints the command line reads.
"""

import inspect as _inspect

from . import _lenet5, datasets
from ._lenet5 import (
    PARAMETER_NAMES,
    TUNING_VAL_SPLIT,
    Error,
    Int8Model,
    Model,
    SettingError,
    __version__,
    presets,
    settings,
)
from ._result import EpochProgress as _EpochProgress
from ._result import TrainResult

__all__ = [
    "Error",
    "Int8Model",
    "Model",
    "PARAMETER_NAMES",
    "SettingError",
    "TUNING_VAL_SPLIT",
    "TrainResult",
    "__version__",
    "datasets",
    "presets",
    "settings",
    "train",
]

_OWN = ["preset", "config", "on_epoch", "train_data", "test_data", "class_names"]


def train(*, progress=False, **arguments):
    if progress:
        epochs = arguments.get("epochs")
        if epochs is None and arguments.get("resume") is None:
            preset = next((p["settings"] for p in presets() if p["name"] == arguments.get("preset")), {})
            epochs = preset.get("epochs", next(s["default"] for s in settings() if s["name"] == "epochs"))
        bar = _EpochProgress(epochs, arguments.get("on_epoch"))
        arguments["on_epoch"] = bar
        try:
            history, run_dir, best_epoch = _lenet5.train(**arguments)
        finally:
            bar.close()
    else:
        history, run_dir, best_epoch = _lenet5.train(**arguments)
    return TrainResult(history, run_dir, best_epoch)


train.__doc__ = (
    _lenet5.train.__doc__.replace("(`lenet5.train` makes them a `TrainResult`)", "as a `TrainResult`")
    + "\n\n`progress=True` shows a bar of the epochs (tqdm's, in a terminal or a notebook, where it is installed),"
    " else a line per epoch on standard error."
)
# The real defaults, as the specification gives them (`settings()`), for `help()`, IDEs and `inspect`.
train.__signature__ = _inspect.Signature(
    [_inspect.Parameter(name, _inspect.Parameter.KEYWORD_ONLY, default=None) for name in _OWN]
    + [_inspect.Parameter("progress", _inspect.Parameter.KEYWORD_ONLY, default=False)]
    + [_inspect.Parameter(s["name"], _inspect.Parameter.KEYWORD_ONLY, default=s["default"]) for s in settings()]
)
