"""lenet5.train: runs on a subset, the same weights as the command line, pruning through the callback, resume."""

import json
import threading
import time

import numpy as np
import pytest

import lenet5

SUBSET = dict(train_limit=2000, test_limit=500, threads=1)
KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "train_seconds", "val_seconds"}


def test_a_few_epochs_on_a_subset_write_the_run_and_return_its_history(tmp_path, data_root):
    out = tmp_path / "run"
    history = lenet5.train(epochs=3, lr=1e-2, head="logits", data=data_root, out=out, **SUBSET)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert all(set(r) == KEYS for r in history)
    assert history[-1]["val_acc"] > 0.6, history
    for name in ["best.safetensors", "last.safetensors", "metrics.jsonl"]:
        assert (out / name).is_file()
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["val_acc"], r["train_loss"]) for r in logged] == [
        (r["epoch"], r["val_acc"], r["train_loss"]) for r in history
    ]
    best = max(history, key=lambda r: r["val_acc"])
    model = lenet5.Model.load(out / "best.safetensors")
    assert model.head == "logits"
    assert model.metadata["epoch"] == str(best["epoch"])


def test_a_run_gives_the_weights_of_the_same_lenet5_train(tmp_path, data_root, cli):
    settings = dict(epochs=2, batch_size=32, lr=5e-3, seed=7, augment=True, lr_schedule="cosine")
    lenet5.train(data=data_root, out=tmp_path / "py", **settings, **SUBSET)
    cli(
        "train", "--epochs", "2", "--batch-size", "32", "--lr", "5e-3", "--seed", "7", "--augment",
        "--lr-schedule", "cosine", "--train-limit", "2000", "--test-limit", "500", "--threads", "2",
        "--data", data_root, "--out", tmp_path / "cli", "--progress", "plain",
    )
    for name in ["best.safetensors", "last.safetensors"]:
        ours = lenet5.Model.load(tmp_path / "py" / name).state_dict()
        theirs = lenet5.Model.load(tmp_path / "cli" / name).state_dict()
        for key in lenet5.PARAMETER_NAMES:
            assert np.array_equal(ours[key], theirs[key]), (name, key)


def test_a_preset_trains_as_the_command_lines_and_keywords_override_it(tmp_path, data_root, cli):
    assert [p["name"] for p in lenet5.presets()] == ["fast"]
    history = lenet5.train(preset="fast", epochs=2, data=data_root, out=tmp_path / "py", **SUBSET)
    # Evaluated after the last epoch only: the first has no val figures.
    assert [r["epoch"] for r in history] == [1, 2] and np.isnan(history[0]["val_acc"])
    assert history[-1]["val_acc"] > 0.5, history
    cli(
        "train", "--preset", "fast", "--epochs", "2", "--train-limit", "2000", "--test-limit", "500",
        "--threads", "2", "--data", data_root, "--out", tmp_path / "cli", "--progress", "plain",
    )
    ours = lenet5.Model.load(tmp_path / "py" / "last.safetensors").state_dict()
    theirs = lenet5.Model.load(tmp_path / "cli" / "last.safetensors").state_dict()
    assert all(np.array_equal(ours[key], theirs[key]) for key in lenet5.PARAMETER_NAMES)
    spec = json.loads((tmp_path / "py" / "config.json").read_text())
    assert (spec["head"], spec["lr_per_batch"], spec["epochs"]) == ("logits", True, 2)
    with pytest.raises(lenet5.SettingError, match="preset"):
        lenet5.train(preset="quick", out=tmp_path / "bad")


def test_a_runs_config_json_trains_the_same_run_again_from_python(tmp_path, data_root, cli):
    """The run specification a `lenet5 train` run writes, read by `lenet5.train(config=...)`: the same bits."""
    cli(
        "train", "--epochs", "2", "--lr", "0.02", "--head", "logits", "--train-limit", "1000", "--test-limit", "300",
        "--data", data_root, "--out", tmp_path / "cli", "--progress", "plain",
    )
    config = tmp_path / "cli" / "config.json"
    assert json.loads(config.read_text())["lr"] == 0.02
    lenet5.train(config=config, out=tmp_path / "py")
    settings = {k: v for k, v in json.loads(config.read_text()).items() if v is not None}
    lenet5.train(config=settings, out=tmp_path / "dict", threads=1)
    for run in ["py", "dict"]:
        ours = lenet5.Model.load(tmp_path / run / "last.safetensors").state_dict()
        theirs = lenet5.Model.load(tmp_path / "cli" / "last.safetensors").state_dict()
        assert all(np.array_equal(ours[k], theirs[k]) for k in lenet5.PARAMETER_NAMES), run
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 0.1\n")
    with pytest.raises(lenet5.Error, match=r"bad.toml: unknown setting `learning_rate` \(did you mean `lr`\?\)"):
        lenet5.train(config=bad, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_a_validation_split_of_arrays_keeps_the_test_arrays_for_the_end(tmp_path, test_images):
    images, labels = test_images
    history = lenet5.train(
        train_data=(images[:1500], labels[:1500]), test_data=(images[1500:1800], labels[1500:1800]),
        val_split=0.2, epochs=2, lr=0.02, head="logits", out=tmp_path / "r", threads=1,
    )
    assert len(history) == 2
    state = json.loads(lenet5.Model.load(tmp_path / "r" / "last.safetensors").metadata["train_state"])
    assert state["test"]["total"] == 300 and state["config"]["holdout"]["share"] == 0.2


def test_returning_false_from_on_epoch_stops_the_run_and_it_resumes(tmp_path, data_root):
    out = tmp_path / "run"
    seen = []

    def prune_after_two(record):
        seen.append(record)
        return record["epoch"] < 2

    history = lenet5.train(epochs=5, data=data_root, out=out, on_epoch=prune_after_two, **SUBSET)
    assert [r["epoch"] for r in history] == [1, 2]
    assert [r["epoch"] for r in seen] == [1, 2]
    assert set(seen[0]) == KEYS | {"new_best"} and seen[0]["new_best"] is True
    resumed = lenet5.train(resume=out, data=data_root, **SUBSET)
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4, 5]
    assert resumed[:2] == history

    # The same five epochs without a stop: identical figures (the times aside).
    whole = lenet5.train(epochs=5, data=data_root, out=tmp_path / "whole", **SUBSET)
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in h]
    assert strip(whole) == strip(resumed)


def test_returning_nothing_from_on_epoch_lets_the_run_go_on(tmp_path, data_root):
    calls = []
    history = lenet5.train(epochs=2, data=data_root, out=tmp_path / "r", on_epoch=calls.append, **SUBSET)
    assert len(history) == len(calls) == 2


def test_an_exception_in_on_epoch_stops_the_run_and_is_raised(tmp_path, data_root):
    class Stop(Exception):
        pass

    def fail(record):
        raise Stop(f"stopped at {record['epoch']}")

    with pytest.raises(Stop, match="stopped at 1"):
        lenet5.train(epochs=3, data=data_root, out=tmp_path / "r", on_epoch=fail, **SUBSET)
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1


def test_the_interpreter_runs_other_threads_while_the_engine_trains(tmp_path, data_root):
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(h=lenet5.train(epochs=2, data=data_root, out=tmp_path / "r", **SUBSET))
    )
    ticks = 0
    worker.start()
    while worker.is_alive():
        ticks += 1
        time.sleep(0.001)
    worker.join()
    assert len(result["h"]) == 2
    # Two epochs of 2,000 images take ~0.1 s; a thread that held the interpreter would leave ~0 ticks.
    assert ticks >= 20, ticks


def test_ctrl_c_stops_the_run_at_once_and_leaves_it_resumable(tmp_path, data_root):
    import os
    import signal

    out = tmp_path / "r"
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    t0 = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        lenet5.train(epochs=50, data=data_root, out=out, threads=1)  # about a minute if nothing stopped it
    assert time.perf_counter() - t0 < 10
    assert (out / "last.safetensors").is_file()
    history = lenet5.train(resume=out, epochs=1, data=data_root, train_limit=None, threads=1)
    assert [r["epoch"] for r in history] == [1]


@pytest.mark.parametrize("batch_size", [16, 16384, 65536])
def test_ctrl_c_stops_within_half_a_second_at_any_batch_size(tmp_path, data_root, batch_size):
    """The engine is asked between the rounds of a large batch too: a step of 65,536 images (a second of
    training) is abandoned part-way, the weights left as they were before it."""
    import os
    import signal
    import threading

    sent = {}

    def interrupt():
        sent["at"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    # Sent once training is under way (MNIST takes a moment to read).
    timer = threading.Timer(2.0, interrupt)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        lenet5.train(epochs=50, batch_size=batch_size, data=data_root, out=tmp_path / "r", threads=1)
    stopped = time.perf_counter() - sent["at"]
    assert stopped < 0.5, f"stopped {stopped:.2f} s after Ctrl-C at batch size {batch_size}"


def test_an_image_folder_trains_and_images_left_out_are_logged(tmp_path, caplog):
    import logging

    rng = np.random.default_rng(0)
    for k, name in enumerate(["circle", "square", "triangle"]):
        (tmp_path / "shapes" / name).mkdir(parents=True)
        for i in range(10):
            pixels = (rng.random((28, 28)) * 60 + 60 * k).astype(np.uint8)
            (tmp_path / "shapes" / name / f"{i}.pgm").write_bytes(b"P5\n28 28\n255\n" + pixels.tobytes())
    (tmp_path / "shapes" / "square" / "broken.png").write_bytes(b"not a picture")
    folder = tmp_path / "shapes"

    with pytest.raises(lenet5.Error, match="1 of 31 images cannot be used: .*broken.png"):
        lenet5.train(epochs=1, dataset=folder, out=tmp_path / "r", threads=1)
    with caplog.at_level(logging.WARNING, logger="lenet5"):
        history = lenet5.train(epochs=2, dataset=folder, out=tmp_path / "r", threads=1, skip_bad_images=True,
                               lr=1e-2, head="logits", force=True)
    assert len(history) == 2
    assert any("left out 1 image(s)" in r.getMessage() and "broken.png" in r.getMessage() for r in caplog.records)
    model = lenet5.Model.load(tmp_path / "r" / "best.safetensors")
    assert model.class_names == ["circle", "square", "triangle"] and model.num_classes == 3
    assert model.state_dict()["output.weight"].shape == (3, 84)


def mnist_arrays(data_root, n_train, n_test):
    from conftest import read_idx

    raw = data_root / "MNIST" / "raw"
    read = lambda name, n: read_idx(raw / f"{name}-ubyte.gz")[:n]
    return (read("train-images-idx3", n_train), read("train-labels-idx1", n_train)), (
        read("t10k-images-idx3", n_test),
        read("t10k-labels-idx1", n_test),
    )


def test_numpy_arrays_train_to_the_bits_of_the_same_images_on_disk(tmp_path, data_root, cli):
    (x, y), test = mnist_arrays(data_root, 2000, 500)
    settings = dict(epochs=2, lr=1e-2, head="logits", threads=1)
    history = lenet5.train(train_data=(x, y), test_data=test, out=tmp_path / "u8", **settings)
    floats = (x / 255.0, y.astype(np.int32))  # float64 bytes / 255, other integer labels: the same data
    lenet5.train(train_data=floats, test_data=(test[0][:, None] / np.float32(255), test[1]), out=tmp_path / "f",
                 **settings)
    cli("train", "--epochs", "2", "--lr", "1e-2", "--head", "logits", "--train-limit", "2000", "--test-limit",
        "500", "--data", data_root, "--out", tmp_path / "cli", "--progress", "plain")
    cli_history = [json.loads(line) for line in (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_acc"] for r in history] == [r["val_acc"] for r in cli_history]
    for run in ["u8", "f"]:
        ours = lenet5.Model.load(tmp_path / run / "last.safetensors").state_dict()
        theirs = lenet5.Model.load(tmp_path / "cli" / "last.safetensors").state_dict()
        assert all(np.array_equal(ours[k], theirs[k]) for k in lenet5.PARAMETER_NAMES), run
    model = lenet5.Model.load(tmp_path / "u8" / "best.safetensors")
    assert model.class_names == [str(k) for k in range(10)] and model.metadata["dataset"] == "arrays"


def test_a_run_on_arrays_resumes_on_the_same_arrays_only(tmp_path, data_root):
    (x, y), test = mnist_arrays(data_root, 1000, 300)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    kw = dict(train_data=(x, y), test_data=test, class_names=names, threads=1)
    lenet5.train(epochs=3, out=tmp_path / "r", on_epoch=lambda r: r["epoch"] < 1, **kw)
    with pytest.raises(lenet5.Error, match="not the data this run was trained on"):
        lenet5.train(resume=tmp_path / "r", train_data=(x[::-1], y[::-1]), test_data=test, threads=1)
    resumed = lenet5.train(resume=tmp_path / "r", **kw)
    whole = lenet5.train(epochs=3, out=tmp_path / "whole", **kw)
    assert [r["val_acc"] for r in resumed] == [r["val_acc"] for r in whole]
    assert lenet5.Model.load(tmp_path / "r" / "best.safetensors").class_names == names


def test_arrays_that_cannot_be_training_data_are_refused(tmp_path, data_root):
    (x, y), test = mnist_arrays(data_root, 100, 50)
    wide = y.astype(np.int64)
    out = tmp_path / "r"
    cases = [
        (dict(train_data=(x, y[:99]), test_data=test), "train_data: 100 images need 100 labels"),
        (dict(train_data=(x, wide + 991), test_data=test), "train_data: label 1000; labels are classes 0 to 999"),
        (dict(train_data=(x, -wide - 1), test_data=test), "train_data: label -"),
        (dict(train_data=(x / 256.0, y), test_data=test), "train_data: pixel .* are bytes"),
        (dict(train_data=(x[:, :27], y), test_data=test), r"train_data: expected shape \[N, 28, 28\]"),
        (dict(train_data=(x, y), test_data=test, class_names=["a", "b"]), "label 9 is out of range for 2 class_"),
        (dict(train_data=(x, y)), "train_data and test_data go together"),
        (dict(train_data=(x, y), test_data=test, dataset="mnist"), "replace data and dataset"),
        (dict(class_names=["a", "b"]), "class_names: only with train_data and test_data"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            lenet5.train(epochs=1, out=out, **kwargs)
    assert not out.exists()
    with pytest.raises(lenet5.Error, match="data set arrays has an empty training split"):
        lenet5.train(epochs=1, out=out, train_data=(x[:0], y[:0]), test_data=test)


def test_an_array_that_claims_a_huge_size_is_refused_before_anything_is_copied(tmp_path, test_images):
    """np.broadcast_to makes an array of 10^8 images out of one: its shape is checked before a byte is copied (the
    interpreter once aborted allocating 78 GB)."""
    images, labels = test_images
    for dtype in [np.uint8, np.float32, np.float64]:
        huge = np.broadcast_to(images[0].astype(dtype), (10**8, 28, 28))
        with pytest.raises(ValueError, match="at most 1000000 images in one call, got 100000000"):
            lenet5.train(train_data=(huge, np.broadcast_to(np.int64(0), (10**8,))), test_data=(images[:10], labels[:10]),
                         out=tmp_path / "r")


def test_train_returns_the_history_with_its_best_epoch_and_model_and_can_show_progress(tmp_path, data_root, capsys):
    out = tmp_path / "r"
    result = lenet5.train(epochs=2, lr=1e-2, head="logits", data=data_root, out=out, train_limit=2000,
                          test_limit=500, progress=True)
    assert isinstance(result, list) and isinstance(result, lenet5.TrainResult)
    assert result.history == list(result) and [r["epoch"] for r in result] == [1, 2]
    assert result.best == max(result, key=lambda r: r["val_acc"]) and result.run_dir == out
    assert result.model.state_dict().keys() == lenet5.Model.load(out / "best.safetensors").state_dict().keys()
    assert "2/2" in capsys.readouterr().err
    seen = []
    lenet5.train(resume=out, epochs=3, progress=True, on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [3], "the caller's on_epoch still runs under the bar"
