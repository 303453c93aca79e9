"""Errors as exceptions with the command line's messages, and type hints that agree with the module."""

import ast
import inspect
from pathlib import Path

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
    with pytest.raises(ValueError, match='head: expected "sigmoid" or "logits", got "softmax"'):
        lenet5.train(head="softmax", out=tmp_path / "r")
    with pytest.raises(ValueError, match="lr_schedule"):
        lenet5.train(lr_schedule="linear", out=tmp_path / "r")
    with pytest.raises(ValueError, match="on_epoch"):
        lenet5.train(on_epoch=3, out=tmp_path / "r")
    with pytest.raises(TypeError):
        lenet5.train(5)  # keyword arguments only


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


def test_the_type_hints_list_every_keyword_of_train_with_its_default():
    runtime = inspect.signature(lenet5.train).parameters.values()
    actual = [(p.name, p.default) for p in runtime]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in runtime)
    hinted = stub_signature("train")
    assert [n for n, _ in hinted] == [n for n, _ in actual]
    for (name, hint), (_, default) in zip(hinted, actual):
        # The signature the module reports writes `...` for the defaults it cannot spell (a tuple, a path).
        assert default is Ellipsis or hint == default, name
    assert [n for n, d in actual if d is Ellipsis] == ["scale", "out"]


def test_a_run_that_names_no_directory_writes_save_model(tmp_path, data_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lenet5.train(epochs=1, data=data_root, train_limit=100, test_limit=100)
    assert (tmp_path / "save_model" / "best.safetensors").is_file()
    assert lenet5.Model.load("save_model/best.safetensors").head == "sigmoid"
