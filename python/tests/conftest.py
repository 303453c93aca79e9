"""Shared fixtures: the repository's bundled MNIST, the `lenet5` program built from the same source (for
comparisons with the command line), and numpy copies of test images."""

import gzip
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


@pytest.fixture(scope="session")
def data_root() -> Path:
    assert (DATA / "MNIST" / "raw").is_dir(), f"the bundled MNIST is missing from {DATA}"
    return DATA


@pytest.fixture(scope="session")
def test_images(data_root):
    """MNIST's 10,000 test images (uint8, [N, 28, 28]) and labels."""
    raw = data_root / "MNIST" / "raw"
    return read_idx(raw / "t10k-images-idx3-ubyte.gz"), read_idx(raw / "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(scope="session")
def cli():
    """Runs the `lenet5` program ($LENET5_BIN, else the release build of this checkout) and returns its stdout."""
    binary = Path(os.environ.get("LENET5_BIN", REPO / "target" / "release" / "lenet5"))
    assert binary.is_file(), f"{binary} not found: build it with `cargo build --release` or set LENET5_BIN"

    def run(*args: str) -> str:
        env = {k: v for k, v in os.environ.items() if k != "LENET5_DATA"}
        done = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, f"lenet5 {' '.join(map(str, args))} failed: {done.stderr}"
        return done.stdout

    return run
