"""What the Python package costs over the command line for the same run: `lenet5 train` as a process, against
`lenet5.train(...)` called in a running interpreter and in a fresh one (`python -c`, which adds the
interpreter's start and the import). Interleaved, repeated, medians reported; the runs' weights are compared.

    cargo build --release && scripts/python-test.sh   # or: pip install ./python
    python bench/python_overhead.py [--reps 7] [--threads 2]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import lenet5

REPO = Path(__file__).resolve().parents[1]


def cli_run(binary, out, epochs, train_limit, threads):
    args = [str(binary), "train", "--epochs", str(epochs), "--data", str(REPO / "data"), "--out", str(out),
            "--force", "--threads", str(threads), "--progress", "plain"]
    if train_limit:
        args += ["--train-limit", str(train_limit), "--test-limit", str(train_limit)]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - t0


def python_kwargs(out, epochs, train_limit, threads):
    kw = dict(epochs=epochs, data=str(REPO / "data"), out=str(out), force=True, threads=threads)
    if train_limit:
        kw.update(train_limit=train_limit, test_limit=train_limit)
    return kw


def in_process(out, *size):
    t0 = time.perf_counter()
    lenet5.train(**python_kwargs(out, *size))
    return time.perf_counter() - t0


def fresh_process(out, *size):
    code = f"import lenet5; lenet5.train(**{python_kwargs(out, *size)!r})"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bin", default=str(REPO / "target" / "release" / "lenet5"))
    a = p.parse_args()
    sizes = [("1 epoch of 1,000 images", 1, 1000), ("1 epoch of MNIST (60,000 + 10,000)", 1, None)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, epochs, limit in sizes:
            size = (epochs, limit, a.threads)
            names = ["lenet5 train", "lenet5.train() in a running interpreter", "python -c 'lenet5.train()'"]
            times = {name: [] for name in names}
            for _ in range(a.reps):
                times["lenet5 train"].append(cli_run(a.bin, tmp / "cli", *size))
                times["lenet5.train() in a running interpreter"].append(in_process(tmp / "py", *size))
                times["python -c 'lenet5.train()'"].append(fresh_process(tmp / "fresh", *size))
            same = all(
                np.array_equal(lenet5.Model.load(tmp / d / "last.safetensors").state_dict()[k],
                               lenet5.Model.load(tmp / "cli" / "last.safetensors").state_dict()[k])
                for d in ["py", "fresh"] for k in lenet5.PARAMETER_NAMES
            )
            base = statistics.median(times["lenet5 train"])
            print(f"{label}, {a.threads} threads, median of {a.reps} (same weights as the CLI: {same}):")
            for name, t in times.items():
                m = statistics.median(t)
                print(f"  {name:<42} {m * 1e3:8.1f} ms  ({m - base:+.3f} s, x{m / base:.3f})")


if __name__ == "__main__":
    main()
