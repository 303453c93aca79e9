"""LeNet-5 on MNIST-style images: the PyTorch tutorial's recipe, trained by a native engine.

    import lenet5
    history = lenet5.train(epochs=5, out="runs/a")          # the recipe, 5 epochs
    model = lenet5.Model.load("runs/a/best.safetensors")
    classes = model.predict(images)                          # images: [N, 28, 28] floats in [0, 1]

`train` takes the settings of `lenet5 train` as keyword arguments (or a `config` file) and calls `on_epoch` after
every epoch; `settings()` lists them with their defaults;
`Model` predicts, gives PyTorch's `state_dict` as numpy arrays, and saves checkpoints the command line reads.
"""

from ._lenet5 import PARAMETER_NAMES, TUNING_VAL_SPLIT, Error, Model, SettingError, __version__, settings, train

__all__ = ["Error", "Model", "PARAMETER_NAMES", "SettingError", "TUNING_VAL_SPLIT", "__version__", "settings", "train"]
