"""What `lenet5.train` returns, and the progress it can show."""

import sys
from pathlib import Path


class TrainResult(list):
    """The run's history, one dict per finished epoch (it is that list, as `train` always returned), with
    `history` (the same list), `best` (the record of the epoch the run chose its best weights at), `run_dir` and
    `model` (those weights, loaded)."""

    def __init__(self, history, run_dir, best_epoch=None):
        super().__init__(history)
        self.run_dir = Path(run_dir)
        self.best_epoch = best_epoch

    @property
    def history(self):
        return list(self)

    @property
    def best(self):
        return next((record for record in self if record["epoch"] == self.best_epoch), None)

    @property
    def model(self):
        from ._lenet5 import Model

        return Model.load(self.run_dir / "best.safetensors")

    def __repr__(self):
        best = self.best
        shown = "no epoch" if best is None else f"best val_acc {best['val_acc']:.4f} at epoch {best['epoch']}"
        return f"TrainResult({len(self)} epochs, {shown}, run_dir={str(self.run_dir)!r})"


class EpochProgress:
    """A bar of the epochs (tqdm's, in a terminal or a notebook, where tqdm is installed), else a line per epoch
    on standard error; passes each record on to the caller's `on_epoch`."""

    def __init__(self, epochs, on_epoch):
        self.on_epoch = on_epoch
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs, unit="epoch", desc="lenet5")
        except ImportError:
            self.bar = None
        self.epochs = epochs

    def __call__(self, record):
        shown = f"train_loss {record['train_loss']:.4f}  val_acc {record['val_acc']:.4f}"
        if self.bar is not None:
            self.bar.set_postfix_str(shown, refresh=False)
            self.bar.update(1)
        else:
            total = f"/{self.epochs}" if self.epochs else ""
            print(f"epoch {record['epoch']}{total}  {shown}", file=sys.stderr, flush=True)
        return None if self.on_epoch is None else self.on_epoch(record)

    def close(self):
        if self.bar is not None:
            self.bar.close()
