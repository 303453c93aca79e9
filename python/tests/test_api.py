"""Errors as exceptions with the command line's messages, and type hints that agree with the module."""

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import lenet5


def test_settings_out_of_range_raise_setting_error_naming_the_keyword(tmp_path):
    with pytest.raises(lenet5.SettingError, match=r"^invalid setting: lr must be a positive number, got -1$"):
        lenet5.train(lr=-1, out=tmp_path / "r")
    with pytest.raises(lenet5.SettingError, match="batch_size"):
        lenet5.train(batch_size=0, out=tmp_path / "r")
    with pytest.raises(lenet5.SettingError, match="threads must be between 1 and 256, got 0"):
        lenet5.train(threads=0, out=tmp_path / "r")
    assert issubclass(lenet5.SettingError, lenet5.Error) and issubclass(lenet5.Error, Exception)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_bad_choices_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="^head: unknown head `softmax`"):
        lenet5.train(head="softmax", out=tmp_path / "r")
    with pytest.raises(ValueError, match="^lr_schedule: unknown variant `linear`"):
        lenet5.train(lr_schedule="linear", out=tmp_path / "r")
    with pytest.raises(ValueError, match="^lr: invalid type: string"):
        lenet5.train(lr="fast", out=tmp_path / "r")
    with pytest.raises(ValueError, match="on_epoch"):
        lenet5.train(on_epoch=3, out=tmp_path / "r")
    with pytest.raises(TypeError):
        lenet5.train(5)  # keyword arguments only
    assert not (tmp_path / "r").exists()


def test_an_unknown_keyword_names_the_closest_setting(tmp_path):
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'learning_rate' \(did you mean 'lr'\?\)"):
        lenet5.train(learning_rate=0.1, out=tmp_path / "r")
    with pytest.raises(TypeError, match=r"'batchsize' \(did you mean 'batch_size'\?\)"):
        lenet5.train(batchsize=8, out=tmp_path / "r")
    with pytest.raises(lenet5.SettingError, match='out must be a directory, got ""'):
        lenet5.train(out="")
    assert not (tmp_path / "r").exists()


def test_files_and_runs_that_cannot_be_used_raise_error_naming_them(tmp_path, data_root):
    missing = tmp_path / "nowhere"
    with pytest.raises(lenet5.Error, match=f"data set mnist not found: .*{missing}"):
        lenet5.train(data=missing, no_download=True, out=tmp_path / "r")
    with pytest.raises(lenet5.Error, match=f"{tmp_path / 'nothing.safetensors'}"):
        lenet5.Model.load(tmp_path / "nothing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(lenet5.Error, match=f"^{junk}: "):
        lenet5.Model.load(junk)
    assert junk.read_bytes() == b"not a checkpoint at all"
    with pytest.raises(lenet5.Error, match="holds no resumable run"):
        lenet5.train(resume=tmp_path, data=data_root)
    out = tmp_path / "run"
    lenet5.train(epochs=1, data=data_root, out=out, train_limit=100, test_limit=100)
    with pytest.raises(lenet5.Error, match=r"already holds a training run; pass force=True"):
        lenet5.train(epochs=1, data=data_root, out=out, train_limit=100, test_limit=100)


def test_a_diverging_run_raises_error_and_keeps_its_last_epoch(tmp_path, data_root):
    with pytest.raises(lenet5.Error, match="training diverged at epoch 1.*lower lr"):
        lenet5.train(epochs=2, lr=1e9, head="logits", data=data_root, out=tmp_path / "r", train_limit=500)


def stub_signature(name: str):
    """The parameters (name, default source) of function `name` in the module's type hints."""
    stub = Path(lenet5.__file__).with_name("_lenet5.pyi")
    tree = ast.parse(stub.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            args = node.args
            return [(a.arg, ast.literal_eval(d)) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    raise AssertionError(f"{name} missing from {stub}")


def test_the_type_hints_list_every_setting_as_a_keyword_of_train_and_write_no_default():
    runtime = inspect.signature(lenet5._lenet5.train).parameters.values()
    own = ["preset", "config", "on_epoch", "train_data", "test_data", "class_names"]
    assert [p.name for p in runtime] == own + ["settings"]
    assert all(p.default is None for p in list(runtime)[:-1])
    hinted = stub_signature("train")
    names = [s["name"] for s in lenet5.settings()]
    assert [n for n, _ in hinted] == own + names
    assert all(d is Ellipsis for n, d in hinted if n in names), "the defaults are the specification's alone"


def test_settings_lists_the_recipe_as_the_defaults():
    settings = {s["name"]: s for s in lenet5.settings()}
    assert settings["lr"]["default"] == 0.001 and settings["epochs"]["default"] == 50
    assert settings["scale"]["default"] == [0.9, 1.1] and settings["out"]["default"] == "save_model"
    assert settings["patience"]["default"] is None and settings["patience"]["unset"] == "never"
    assert all(s["help"] for s in settings.values())


def test_a_run_that_names_no_directory_writes_save_model(tmp_path, data_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lenet5.train(epochs=1, data=data_root, train_limit=100, test_limit=100)
    assert (tmp_path / "save_model" / "best.safetensors").is_file()
    assert lenet5.Model.load("save_model/best.safetensors").head == "sigmoid"


def test_the_signature_of_train_shows_the_real_defaults():
    parameters = inspect.signature(lenet5.train).parameters
    defaults = {s["name"]: s["default"] for s in lenet5.settings()}
    assert parameters["lr"].default == 0.001 and parameters["epochs"].default == 50
    assert parameters["progress"].default is False and parameters["on_epoch"].default is None
    assert {n: p.default for n, p in parameters.items() if n in defaults} == defaults
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())


def test_datasets_load_gives_the_arrays_of_the_files_train_reads(data_root, test_images, tmp_path):
    (x, y), (x_test, y_test) = lenet5.datasets.load("mnist", root=data_root, download=False)
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8 and y.shape == (60000,) and y.dtype == np.int64
    assert np.array_equal(x_test, test_images[0]) and np.array_equal(y_test, test_images[1])
    loaded = lenet5.datasets.load("mnist", root=data_root, download=False)
    assert loaded.class_names == [str(k) for k in range(10)] and loaded.test[0].shape == (10000, 28, 28)
    with pytest.raises(lenet5.Error, match="fashion-mnist"):
        lenet5.datasets.load("fashion-mnist", root=tmp_path, download=False)
