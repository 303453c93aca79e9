"""Int8Model: Model.quantize and Model.export_c give what `lenet5 quantize` and `lenet5 export --c` give."""

import json

import numpy as np
import pytest

import lenet5
from conftest import REPO

SHIPPED = REPO / "models" / "lenet5-mnist.safetensors"


def test_quantize_in_python_is_the_command_lines_and_the_file_reads_back(tmp_path, data_root, test_images, cli):
    ours = lenet5.Model.load(SHIPPED).quantize(data=data_root)
    ours.save(tmp_path / "py.safetensors")
    cli("quantize", "--weights", SHIPPED, "--out", tmp_path / "cli.safetensors", "--data", data_root)
    back = lenet5.Model.load(tmp_path / "cli.safetensors")
    again = lenet5.Int8Model.load(tmp_path / "py.safetensors")
    assert again.metadata == back.metadata and again.scores_scale == back.scores_scale
    assert isinstance(back, lenet5.Int8Model) and back.num_classes == 10 and back.head == "sigmoid"
    images, labels = test_images
    report = json.loads(cli("eval", "--weights", tmp_path / "cli.safetensors", "--data", data_root, "--json"))
    ours = back.evaluate(images, labels)
    assert (ours["loss"], ours["correct"], report["int8"]) == (report["loss"], report["correct"], True)
    assert ours["accuracy"] >= 0.9804 - 0.003
    predicted = back.predict(images[:50])
    scores = back.scores(images[:50] / 255.0)
    assert scores.dtype == np.int32 and scores.shape == (50, 10)
    assert (scores.argmax(1) == predicted).all()
    assert (again.scores(images[:50]) == scores).all()


def test_export_c_writes_the_two_files_and_refuses_a_directory_in_use(tmp_path, test_images):
    images, _ = test_images
    model = lenet5.Model.load(SHIPPED)
    header, source = model.export_c(tmp_path / "c", images=images[:200], calibration=200)
    assert "LENET5_NUM_CLASSES 10" in open(header).read() and "lenet5_predict" in open(source).read()
    with pytest.raises(lenet5.Error, match="not empty"):
        model.quantize(images=images[:20]).export_c(tmp_path / "c")
    with pytest.raises(lenet5.SettingError, match="calibration"):
        model.quantize(images=images[:20], calibration=0)
