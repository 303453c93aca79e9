#!/usr/bin/env python3
"""The PyTorch tutorial recipe for LeNet-5 on MNIST, for side-by-side comparison with `lenet5 train`.

  --pipeline tutorial   torchvision MNIST + DataLoader(batch 16, shuffle), as the tutorial does
  --pipeline preloaded  the same, with the whole data set preloaded as one tensor (no DataLoader)

Prints one line per epoch with train_loss, train_acc, val_loss, val_acc (means of per-batch values) and the
epoch's time, and with --json a final JSON summary. Needs torch and torchvision.
"""
import argparse
import gzip
import json
import os
import shutil
import tempfile
import time

import torch
from torch import nn


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)
        self.sigmoid = nn.Sigmoid()
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.flatten = nn.Flatten()
        self.linear1 = nn.Linear(400, 120)
        self.linear2 = nn.Linear(120, 84)
        self.output = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.flatten(x)
        x = self.relu(self.linear1(x))
        x = self.relu(self.linear2(x))
        return self.sigmoid(self.output(x))


def torchvision_root(gz_dir):
    """torchvision wants the decompressed files under ROOT/MNIST/raw."""
    root = tempfile.mkdtemp(prefix="lenet5-bench-")
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw)
    for name in os.listdir(gz_dir):
        if name.endswith(".gz"):
            with gzip.open(os.path.join(gz_dir, name)) as src, open(os.path.join(raw, name[:-3]), "wb") as dst:
                shutil.copyfileobj(src, dst)
    return root


def run_epoch(model, batches, loss_fn, opt):
    train = opt is not None
    model.train(train)
    losses, accs = [], []
    with torch.set_grad_enabled(train):
        for x, y in batches:
            out = model(x)
            loss = loss_fn(out, y)
            if train:
                opt.zero_grad()
                loss.backward()
                opt.step()
            losses.append(loss.item())
            accs.append((out.argmax(1) == y).float().mean().item())
    return sum(losses) / len(losses), sum(accs) / len(accs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/MNIST/raw", help="directory with the four MNIST .gz files")
    ap.add_argument("--pipeline", choices=["tutorial", "preloaded"], default="tutorial")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    import torchvision
    from torchvision import transforms
    root = torchvision_root(args.data)
    tf = transforms.ToTensor()
    train_set = torchvision.datasets.MNIST(root, train=True, download=False, transform=tf)
    test_set = torchvision.datasets.MNIST(root, train=False, download=False, transform=tf)
    if args.pipeline == "tutorial":
        train_loader = torch.utils.data.DataLoader(train_set, batch_size=16, shuffle=True)
        test_loader = torch.utils.data.DataLoader(test_set, batch_size=16, shuffle=True)
        train_batches = lambda: train_loader
        test_batches = lambda: test_loader
    else:
        xs = train_set.data.float().div(255).unsqueeze(1)
        ys = train_set.targets
        xt = test_set.data.float().div(255).unsqueeze(1)
        yt = test_set.targets

        def train_batches():
            perm = torch.randperm(len(xs))
            return ((xs[perm[i:i + 16]], ys[perm[i:i + 16]]) for i in range(0, len(xs), 16))

        test_batches = lambda: ((xt[i:i + 16], yt[i:i + 16]) for i in range(0, len(xt), 16))

    model = LeNet5()
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    history = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        train_loss, train_acc = run_epoch(model, train_batches(), loss_fn, opt)
        t1 = time.perf_counter()
        val_loss, val_acc = run_epoch(model, test_batches(), loss_fn, None)
        t2 = time.perf_counter()
        rec = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss, val_acc=val_acc,
                   train_seconds=t1 - t0, val_seconds=t2 - t1)
        history.append(rec)
        print(f"epoch {epoch:>3}/{args.epochs}  train_loss {train_loss:.4f}  train_acc {train_acc:.4f}  "
              f"val_loss {val_loss:.4f}  val_acc {val_acc:.4f}  {t2 - t0:.2f}s", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps({"pipeline": args.pipeline, "threads": args.threads, "history": history}))


if __name__ == "__main__":
    main()
