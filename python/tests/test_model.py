"""lenet5.Model: predictions on numpy arrays, PyTorch's state_dict, and checkpoints the command line reads."""

import json

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import lenet5

# PyTorch's LeNet-5 state_dict: names in order, and shapes (ten classes).
TORCH_SHAPES = {
    "conv1.weight": (6, 1, 5, 5),
    "conv1.bias": (6,),
    "conv2.weight": (16, 6, 5, 5),
    "conv2.bias": (16,),
    "linear1.weight": (120, 400),
    "linear1.bias": (120,),
    "linear2.weight": (84, 120),
    "linear2.bias": (84,),
    "output.weight": (10, 84),
    "output.bias": (10,),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("run")
    lenet5.train(epochs=2, lr=1e-2, head="logits", data=data_root, out=out, train_limit=5000, test_limit=1000)
    return out / "best.safetensors"


def numpy_lenet5(sd, images, head):
    """The recipe's network in plain numpy, from a state_dict: images [N, 1, 28, 28] -> outputs [N, K]."""

    def conv(x, w, b, pad):
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        windows = sliding_window_view(x, (5, 5), axis=(2, 3))
        return np.einsum("nchwij,ocij->nohw", windows, w, optimize=True) + b[None, :, None, None]

    def pool(x):
        n, c, h, w = x.shape
        return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))

    relu = lambda x: np.maximum(x, 0)
    x = images.astype(np.float64)
    x = pool(relu(conv(x, sd["conv1.weight"], sd["conv1.bias"], 2)))
    x = pool(relu(conv(x, sd["conv2.weight"], sd["conv2.bias"], 0)))
    x = x.reshape(len(x), -1)
    x = relu(x @ sd["linear1.weight"].T + sd["linear1.bias"])
    x = relu(x @ sd["linear2.weight"].T + sd["linear2.bias"])
    x = x @ sd["output.weight"].T + sd["output.bias"]
    return 1 / (1 + np.exp(-x)) if head == "sigmoid" else x


def test_state_dict_has_pytorchs_names_shapes_and_order(trained):
    sd = lenet5.Model.load(trained).state_dict()
    assert list(sd) == list(TORCH_SHAPES) == lenet5.PARAMETER_NAMES
    for name, array in sd.items():
        assert array.shape == TORCH_SHAPES[name] and array.dtype == np.float32, name
    assert sum(a.size for a in sd.values()) == 61_706


def test_the_state_dict_computes_what_lenet5_eval_reports(trained, test_images, cli, data_root):
    """The values: the network rebuilt in numpy from the state_dict classifies the test set as `lenet5 eval`
    counts, and gives the outputs the engine gives."""
    model = lenet5.Model.load(trained)
    images, labels = test_images
    x = (images / np.float32(255)).astype(np.float32)[:, None]
    ours = np.concatenate([numpy_lenet5(model.state_dict(), x[i : i + 1000], "logits") for i in range(0, 10000, 1000)])
    engine = model.scores(x)
    assert np.abs(ours - engine).max() < 1e-4
    report = json.loads(cli("eval", "--weights", trained, "--data", data_root, "--json"))
    assert report["total"] == 10000
    assert int((model.predict(x) == labels).sum()) == report["correct"]
    # numpy's float64 may break a near tie the other way: at most a handful of images of 10,000.
    assert abs(int((ours.argmax(1) == labels).sum()) - report["correct"]) <= 3


def test_evaluate_on_arrays_reports_what_lenet5_eval_reports(trained, test_images, cli, data_root):
    model = lenet5.Model.load(trained)
    images, labels = test_images
    report = json.loads(cli("eval", "--weights", trained, "--data", data_root, "--json"))
    ours = model.evaluate(images, labels)
    assert (ours["loss"], ours["correct"], ours["total"]) == (report["loss"], report["correct"], report["total"])
    assert ours == model.evaluate(images / 255.0, labels.astype(np.int64), threads=1)
    assert model.evaluate(images[:100], labels[:100], batch_size=7)["total"] == 100
    with pytest.raises(ValueError, match="label 10 is not a class of this 10-class network"):
        model.evaluate(images[:3], np.array([1, 10, 2]))
    with pytest.raises(ValueError, match="no images to evaluate"):
        model.evaluate(images[:0], labels[:0])
    with pytest.raises(ValueError, match="batch_size"):
        model.evaluate(images[:3], labels[:3], batch_size=0)


def test_images_in_any_layout_and_dtype_give_the_same_predictions(trained, test_images):
    model = lenet5.Model.load(trained)
    images = test_images[0][:200]
    floats = images.astype(np.float32) / 255
    expected = model.scores(floats)
    assert expected.shape == (200, 10) and expected.dtype == np.float32
    assert np.array_equal(model.scores(images), expected)
    assert np.array_equal(model.scores(floats[:, None]), expected)
    assert np.array_equal(model.scores(floats.astype(np.float64)), expected)
    assert np.array_equal(model.scores(np.asfortranarray(floats)), expected)
    assert np.array_equal(model.scores(floats[::-1])[::-1], expected)
    predicted = model.predict(floats)
    assert predicted.dtype == np.int64 and np.array_equal(predicted, expected.argmax(1))
    assert model.predict(floats[:0]).shape == (0,)


def test_a_state_dict_round_trips_through_a_checkpoint_the_command_line_reads(trained, tmp_path, cli, data_root):
    model = lenet5.Model.load(trained)
    sd = {k: v.copy() for k, v in model.state_dict().items()}
    again = lenet5.Model.from_state_dict(sd, head="logits")
    path = tmp_path / "again.safetensors"
    again.save(path)
    a = json.loads(cli("eval", "--weights", trained, "--data", data_root, "--json"))
    b = json.loads(cli("eval", "--weights", path, "--data", data_root, "--json"))
    assert (a["loss"], a["correct"]) == (b["loss"], b["correct"])
    reloaded = lenet5.Model.load(path)
    assert all(np.array_equal(reloaded.state_dict()[k], sd[k]) for k in sd)
    assert reloaded.class_names == [str(k) for k in range(10)]


def test_bad_images_and_state_dicts_are_refused_with_a_clear_error(trained):
    model = lenet5.Model.load(trained)
    with pytest.raises(ValueError, match=r"a batch \[N, 28, 28\], \[N, 1, 28, 28\] or \[N, 28, 28, 1\], got \[2, 3, 28, 28\]"):
        model.predict(np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"got \[\]"):
        model.predict(np.float32(0.5))
    with pytest.raises(TypeError, match="got dtype object"):
        model.predict(np.array([None] * 784).reshape(28, 28))
    bad = np.zeros((2, 28, 28), np.float32)
    bad[1, 3, 4] = np.nan
    with pytest.raises(ValueError, match="pixel 88 of image 1 is NaN"):
        model.predict(bad)
    sd = model.state_dict()
    with pytest.raises(KeyError, match="conv2.bias"):
        lenet5.Model.from_state_dict({k: v for k, v in sd.items() if k != "conv2.bias"})
    with pytest.raises(ValueError, match=r"\"linear1.weight\" has shape \[400, 120\], expected \[120, 400\]"):
        lenet5.Model.from_state_dict({**sd, "linear1.weight": sd["linear1.weight"].T})
    with pytest.raises(ValueError, match=r"\"output.bias\" has shape \[10, 2\], expected \[K\]"):
        lenet5.Model.from_state_dict({**sd, "output.bias": np.zeros((10, 2), np.float32)})
    with pytest.raises(ValueError, match="must be finite"):
        lenet5.Model.from_state_dict({**sd, "output.bias": np.full(10, np.inf, np.float32)})
    with pytest.raises(ValueError, match="3 names for a network of 10 outputs"):
        lenet5.Model.from_state_dict(sd, class_names=["a", "b", "c"])


def test_pictures_are_prepared_as_lenet5_predict_prepares_image_files(trained, test_images, cli, tmp_path):
    """One input path: a photo-like picture (dark ink on light paper, larger, off centre) as an array with
    preprocess="mnist", and the same picture as a file given to `lenet5 predict`, give the same scores."""
    images, _ = test_images
    model = lenet5.Model.load(trained)
    pictures, files = [], []
    for i in range(5):
        big = np.kron(images[i], np.ones((3, 2), dtype=np.uint8))  # 84x56
        paper = np.full((100, 90), 255, dtype=np.uint8)
        paper[5 + i : 89 + i, 20 : 76] = 255 - big
        pictures.append(paper)
        path = tmp_path / f"picture{i}.pgm"
        path.write_bytes(b"P5 90 100 255\n" + paper.tobytes())
        files.append(path)
    report = [json.loads(line) for line in cli("predict", "--weights", trained, "--json", "--top-k", "10", *files).splitlines()]
    scores = model.scores(pictures, preprocess="mnist")
    classes = model.predict(np.stack(pictures), preprocess="mnist")
    for r, s, c in zip(report, scores, classes):
        assert int(r["top"][0]["index"]) == int(c) == int(s.argmax())
        assert [t["index"] for t in r["top"][:3]] == list(np.argsort(-s)[:3])
    blank = np.zeros((30, 30), dtype=np.uint8)
    with pytest.raises(ValueError, match="images: picture 1: no digit found"):
        model.predict([pictures[0], blank], preprocess="mnist")
    with pytest.raises(ValueError, match="preprocess: expected"):
        model.predict(pictures, preprocess="crop")
    with pytest.raises(ValueError, match=r"picture 0: image is 40x40, expected 28x28"):
        model.predict([np.zeros((40, 40))], preprocess="none")


def test_predict_works_in_bounded_chunks(trained, test_images):
    """200,000 images (a broadcast view, which costs no memory) are scored a chunk at a time: the process grows by
    far less than the 627 MB their floats would take at once, and an error names the image in the whole array."""
    import resource

    images, _ = test_images
    model = lenet5.Model.load(trained)
    many = np.broadcast_to(images[:1], (200_000, 28, 28))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    classes = model.predict(many)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert classes.shape == (200_000,) and (classes == classes[0]).all()
    assert grown_mb < 200, f"grew by {grown_mb:.0f} MB"
    bad = (images[:5000] / 255.0).astype(np.float32)
    bad[4500, 3, 4] = np.nan
    with pytest.raises(ValueError, match="pixel 88 of image 4500 is NaN"):
        model.predict(bad)


def test_save_replaces_only_a_regular_file(trained, tmp_path):
    """Model.save, like every output of the command line, replaces a regular file, writes through a link to one
    (which stays a link), and refuses a directory, a FIFO or a link to a FIFO, leaving it as it was."""
    import os
    import stat

    model = lenet5.Model.load(trained)
    fifo, directory = tmp_path / "fifo", tmp_path / "dir"
    os.mkfifo(fifo)
    directory.mkdir()
    (tmp_path / "link-to-fifo").symlink_to(fifo)
    for path in [fifo, directory, tmp_path / "link-to-fifo"]:
        with pytest.raises(lenet5.Error, match="an output replaces only a regular file"):
            model.save(path)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and directory.is_dir() and not any(directory.iterdir())
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    (tmp_path / "link").symlink_to(target)
    model.save(tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and lenet5.Model.load(target).class_names == model.class_names


class FakeTensor:
    """What Model takes of a torch tensor, without torch: detach, cpu and numpy."""

    def __init__(self, array):
        self.array = array

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array


class FakePicture:
    """What Model takes of a PIL image: convert("L")."""

    mode, size = "L", (28, 28)

    def __init__(self, array):
        self.array = array

    def convert(self, mode):
        assert mode == "L"
        return self.array


def test_images_come_as_a_pytorch_user_holds_them(trained, test_images):
    model = lenet5.Model.load(trained)
    images = test_images[0][:20]  # uint8 [N, 28, 28]
    want = model.scores(images)
    same = lambda x, **kw: np.array_equal(model.scores(x, **kw), want)
    assert same(images.astype(np.int64)) and same(images.astype(np.int16))
    assert same(images[:, :, :, None]) and same(images[:, None]) and same(images.tolist())
    assert same(FakeTensor(images)) and same([FakePicture(i) for i in images])
    assert same(images.astype(np.float64), scale=255) and same(images.astype(np.float32), scale=255)
    assert np.array_equal(model.scores(images[0]), want[:1])
    assert np.array_equal(model.scores(FakePicture(images[0])), want[:1])
    assert np.array_equal(model.predict(images[0]), want[:1].argmax(1))
    floats = images.astype(np.float32) / np.float32(255)
    assert same(floats) and model.predict(floats.astype(np.float16)).shape == (20,)
    with pytest.raises(ValueError, match=r"go up to 255.*divide by 255.*scale=255"):
        model.predict(images.astype(np.float32))
    with pytest.raises(ValueError, match="grey levels 0-255, got values from -1 to"):
        model.predict(images.astype(np.int32) - 1)
    with pytest.raises(TypeError, match="dtype <U"):
        model.predict(np.full((28, 28), "a"))
    labels = test_images[1][:20]
    a = model.evaluate(images, labels)
    assert model.evaluate(FakeTensor(images), FakeTensor(labels)) == a
    assert model.evaluate(images.astype(np.float64), labels.tolist(), scale=255) == a
