#!/usr/bin/env python3
"""A lenet5 run specification trained in PyTorch, for the time-to-accuracy comparison (bench/time_to_accuracy.sh).

It reads the specification `lenet5 train --print-config` prints (`--preset fast` by default in that script), so
both programs train the same run: LeNet-5 as the recipe defines it with the specification's head, SGD with its
rate, momentum and weight decay, its batch size and epochs, its label smoothing, and its one-cycle schedule
stepped after every batch (OneCycleLR with lenet5's warm-up share, momentum not cycled, as lenet5 holds it), then
one evaluation on the test set after the last epoch. The data set is read once into two tensors (no DataLoader:
the fastest way PyTorch has to feed a network this small), on `--threads` intra-op threads. Prints one JSON
line: the test accuracy, the seconds spent importing, reading, training and evaluating, and the whole process's
seconds up to that point.

    lenet5 train --preset fast --print-config > fast.json
    python bench/pytorch_fast.py --spec fast.json --data data/MNIST/raw --seed 0
"""
import time

STARTED = time.perf_counter()

import argparse
import gzip
import json
import os

import numpy as np
import torch
from torch import nn

IMPORTED = time.perf_counter()


class LeNet5(nn.Module):
    def __init__(self, sigmoid):
        super().__init__()
        self.head = torch.sigmoid if sigmoid else (lambda x: x)
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.linear1 = nn.Linear(400, 120)
        self.linear2 = nn.Linear(120, 84)
        self.output = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.linear1(x))
        x = torch.relu(self.linear2(x))
        return self.head(self.output(x))


def supported(spec):
    """The specification, refused in one line where it asks for what this script does not do."""
    checks = {
        "lr_schedule": spec["lr_schedule"] in ("constant", "onecycle"),
        "lr_per_batch": spec["lr_per_batch"] or spec["lr_schedule"] == "constant",
        "eval_every": spec["eval_every"] == 0,
        "augment": not spec["augment"],
        "val_split": not spec["val_split"],
    }
    for name, ok in checks.items():
        if not ok:
            raise SystemExit(f"error: {name} = {spec[name]!r} is not supported by this script")
    return spec


def read_idx(path):
    with gzip.open(path) if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def split(root, prefix):
    def find(name):
        for candidate in (name, name + ".gz"):
            if os.path.exists(os.path.join(root, candidate)):
                return os.path.join(root, candidate)
        raise SystemExit(f"error: no {name} under {root}")

    images = torch.from_numpy(read_idx(find(f"{prefix}-images-idx3-ubyte")).astype(np.float32) / 255.0)
    labels = torch.from_numpy(read_idx(find(f"{prefix}-labels-idx1-ubyte")).astype(np.int64))
    return images.unsqueeze(1).contiguous(), labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", required=True, help="a run specification, as `lenet5 train --print-config` prints it")
    ap.add_argument("--data", default="data/MNIST/raw", help="directory of the four MNIST files (raw or .gz)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true", help="NHWC memory layout (oneDNN's preferred)")
    args = ap.parse_args()
    with open(args.spec) as f:
        spec = supported(json.load(f))
    epochs, batch_size, lr = spec["epochs"], spec["batch_size"], spec["lr"]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    x_train, y_train = split(args.data, "train")
    x_test, y_test = split(args.data, "t10k")
    memory = torch.channels_last if args.channels_last else torch.contiguous_format
    x_train, x_test = x_train.to(memory_format=memory), x_test.to(memory_format=memory)
    read = time.perf_counter() - t0

    model = LeNet5(sigmoid=spec["head"] == "sigmoid").to(memory_format=memory)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=spec["label_smoothing"])
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=spec["momentum"], weight_decay=spec["weight_decay"])
    batches = (len(x_train) + batch_size - 1) // batch_size
    sched = None
    if spec["lr_schedule"] == "onecycle":
        # lenet5's warm-up: warmup_epochs, else 30% of the epochs, rounded, at least one.
        warmup = spec["warmup_epochs"] if spec["warmup_epochs"] is not None else max(1, round(epochs * 0.3))
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=epochs * batches, pct_start=warmup / epochs,
            cycle_momentum=False, div_factor=25.0, final_div_factor=1e4)

    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_train))
        for b in range(batches):
            idx = order[b * batch_size : (b + 1) * batch_size]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
    trained = time.perf_counter() - t0

    t0 = time.perf_counter()
    model.eval()
    correct = 0
    with torch.inference_mode():
        for b in range(0, len(x_test), 1000):
            correct += (model(x_test[b : b + 1000]).argmax(1) == y_test[b : b + 1000]).sum().item()
    evaluated = time.perf_counter() - t0
    print(json.dumps({
        "seed": args.seed,
        "test_acc": correct / len(x_test),
        "import_seconds": IMPORTED - STARTED,
        "read_seconds": read,
        "train_seconds": trained,
        "eval_seconds": evaluated,
        "process_seconds": time.perf_counter() - STARTED,
        "torch": torch.__version__,
        "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
