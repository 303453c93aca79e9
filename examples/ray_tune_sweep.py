"""Tune LeNet-5 with Ray Tune: the same search as examples/optuna_sweep.py (lr, batch size, head, augmentation),
with ASHA stopping poor trials early from the val_acc each epoch reports.

    pip install ./python "ray[tune]"
    python examples/ray_tune_sweep.py --samples 8 --epochs 10 --cpus-per-trial 1

Ray runs the trials on the cores of this machine, or on a Ray cluster (`ray start --head` on one machine,
`ray start --address=HEAD:6379` on the others, then this script with `--address auto`); every machine then
needs the package and the data. Each trial trains with `lenet5.train` into its own run directory, which the
results name.
"""

import argparse
import os
import sys
from pathlib import Path

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

import lenet5


def trainable(config):
    out = Path(config["out"]) / tune.get_context().get_trial_id()

    def report(record):
        tune.report({"val_acc": record["val_acc"], "epoch": record["epoch"], "run": str(out)})

    lenet5.train(
        epochs=config["epochs"],
        lr=config["lr"],
        batch_size=config["batch_size"],
        head=config["head"],
        augment=config["augment"],
        out=out,
        force=True,
        data=config["data"],
        train_limit=config["train_limit"],
        test_limit=config["test_limit"],
        threads=config["threads"],
        on_epoch=report,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=8, help="trials to draw")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--cpus-per-trial", type=int, default=1, help="cores (and threads) each trial takes")
    p.add_argument("--out", default="ray-trials", help="directory of the trials' runs")
    p.add_argument("--data", default=os.environ.get("LENET5_DATA", "data"), help="data root")
    p.add_argument("--train-limit", type=int)
    p.add_argument("--test-limit", type=int)
    p.add_argument("--address", help="a Ray cluster to join (`auto` for the local one); default: start one here")
    args = p.parse_args()

    ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    config = {
        "lr": tune.loguniform(1e-4, 1e-1),
        "batch_size": tune.choice([16, 32, 64]),
        "head": tune.choice(["sigmoid", "logits"]),
        "augment": tune.choice([False, True]),
        "epochs": args.epochs,
        "threads": args.cpus_per_trial,
        "out": str(Path(args.out).resolve()),
        "data": str(Path(args.data).resolve()),
        "train_limit": args.train_limit,
        "test_limit": args.test_limit,
    }
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": args.cpus_per_trial}),
        param_space=config,
        tune_config=tune.TuneConfig(
            metric="val_acc",
            mode="max",
            num_samples=args.samples,
            scheduler=ASHAScheduler(time_attr="epoch", max_t=args.epochs, grace_period=1, reduction_factor=2),
        ),
    )
    results = tuner.fit()
    best = results.get_best_result()
    stopped = sum(1 for r in results if r.metrics and r.metrics.get("epoch", 0) < args.epochs)
    print(f"{len(results)} trials, {stopped} stopped early by ASHA")
    settings = {k: best.config[k] for k in ["lr", "batch_size", "head", "augment"]}
    print(f"best val_acc {best.metrics['val_acc']:.4f} with {settings}")
    print(f"weights: {Path(best.metrics['run']) / 'best.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
