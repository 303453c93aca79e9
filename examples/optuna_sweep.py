"""Tune LeNet-5's lr, batch size, head and augmentation with Optuna, pruning poor trials after each epoch.

The study lives in an Optuna storage that every worker opens, which is how Optuna spreads trials over
processes and machines: start this script as many times as you like, on one machine or on many, with the same
--storage and --study-name, and each worker takes the next trial.

    # one machine, two workers sharing a SQLite file
    python examples/optuna_sweep.py --storage sqlite:///study.db --trials 10 --threads 1 &
    python examples/optuna_sweep.py --storage sqlite:///study.db --trials 10 --threads 1 &
    wait
    python examples/optuna_sweep.py --storage sqlite:///study.db --summary
    lenet5 eval --weights "$(python examples/optuna_sweep.py --storage sqlite:///study.db --best-checkpoint)"

    # many machines: one PostgreSQL database (pip install "psycopg[binary]"), the same command on each; a worker
    # killed mid-trial (SIGKILL, or SIGTERM from a scheduler) leaves the trial to be resumed by the next one
    python examples/optuna_sweep.py --storage postgresql+psycopg://user:password@db-host/optuna --trials 20

`--storage journal:PATH` uses Optuna's journal file instead (one machine, or a shared file system). Each trial
trains with `lenet5.train` into OUT/trial-NNNN and is judged on images held out of the training set (10% unless
--val-split says otherwise; 0 judges on the test set). The summary names the best trial, its checkpoint and the
machine that wrote it, and the test accuracy of that trial alone, measured once after its training.
"""

import argparse
import json
import signal
import socket
import sys
import time
import warnings
from pathlib import Path

import optuna

import lenet5


# What tries a trial again whose worker died: named so since Optuna 4.9, and before it as a failed trial's callback.
RETRY = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
RETRY_ARGUMENT = "heartbeat_stale_trial_callback" if RETRY.__name__.startswith("RetryHeartbeat") else "failed_trial_callback"


class Preempted(BaseException):
    """SIGTERM (what Slurm and Kubernetes send before they kill): the trial stops at its last finished epoch and
    is left to the heartbeat, which hands it to the next worker, to resume. (Optuna would mark a trial that
    raised anything it catches as failed for good.)"""


# Set by SIGTERM and never cleared: the handler's exception is lost when the signal lands in code that ignores
# exceptions (a garbage collector's callback inside the database driver), so the flag is looked at again at every
# epoch's end and between trials.
preempted = False


def on_sigterm(signum, frame):
    global preempted
    preempted = True
    raise Preempted()


def stop_if_preempted(*_):
    if preempted:
        raise Preempted()


def storage_of(url: str, heartbeat: int = 0):
    """An Optuna storage: `journal:PATH` for a journal file, else an RDB URL (sqlite:///...,
    postgresql+psycopg://...). With `heartbeat` seconds, each running trial beats; one silent for three beats
    (its worker was killed) is marked failed by the next worker to start a trial, and tried again: resumed from
    its run directory, so no finished epoch is trained twice."""
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    # SQLite serialises writers; wait for the other workers' writes instead of failing at once.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    beats = {}
    if heartbeat:
        retry = RETRY(max_retry=3, inherit_intermediate_values=True)
        beats = {"heartbeat_interval": heartbeat, "grace_period": 3 * heartbeat, RETRY_ARGUMENT: retry}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine, **beats)
    if url.startswith("sqlite"):
        lock_sqlite_transactions(storage.engine)
    return storage


def lock_sqlite_transactions(engine):
    """Makes each of Optuna's transactions on SQLite take the database's write lock as it begins.

    Optuna reads a trial's state and then changes it (a stale trial to failed, a waiting one to running),
    relying on `SELECT ... FOR UPDATE`, which SQLite ignores; and Python's sqlite3 begins a transaction only at
    the first write, so two workers could both read "running" and both fail the same stale trial, each
    queueing a retry, and two workers then resumed one run directory. `BEGIN IMMEDIATE` serialises them:
    the second reads what the first wrote."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def no_implicit_transactions(dbapi_connection, _):
        dbapi_connection.isolation_level = None  # sqlite3 leaves BEGIN to us

    @event.listens_for(engine, "begin")
    def begin_with_the_write_lock(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # the connections opened before this: closed, so that every one is made as above


def run_dir(args, number: int) -> Path:
    return Path(args.out) / f"trial-{number:04d}"


def resumable(run: Path) -> bool:
    """Whether `run` holds the state of a run that finished at least one epoch."""
    return (run / "last.safetensors").is_file() and (run / "config.json").is_file()


def objective(args):
    def run(trial: optuna.Trial) -> float:
        settings = dict(
            lr=trial.suggest_float("lr", 1e-4, 1e-1, log=True),
            batch_size=trial.suggest_categorical("batch_size", [16, 32, 64]),
            head=trial.suggest_categorical("head", ["sigmoid", "logits"]),
            augment=trial.suggest_categorical("augment", [False, True]),
        )
        # A trial tried again after its worker was killed goes on in the run directory of the first try.
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        first = RETRY.retried_trial_number(frozen)
        out = run_dir(args, trial.number if first is None else first)
        trial.set_user_attr("run", str(out.resolve()))
        trial.set_user_attr("checkpoint", str((out / "best.safetensors").resolve()))
        trial.set_user_attr("host", socket.gethostname())

        def report(record):
            stop_if_preempted()
            trial.report(record["val_acc"], step=record["epoch"])
            return not trial.should_prune()  # False stops the run: the trial is pruned

        stop_if_preempted()
        if first is not None and resumable(out):
            trial.set_user_attr("resumed_from", first)
            history = lenet5.train(resume=out, epochs=args.epochs, threads=args.threads, on_epoch=report)
        else:
            history = lenet5.train(
                epochs=args.epochs,
                out=out,
                force=True,
                data=args.data,
                dataset=args.dataset,
                train_limit=args.train_limit,
                test_limit=args.test_limit,
                threads=args.threads,
                seed=args.seed,
                val_split=args.val_split,
                on_epoch=report,
                **settings,
            )
        if len(history) < args.epochs and trial.should_prune():
            raise optuna.TrialPruned(f"val_acc {history[-1]['val_acc']:.4f} after epoch {len(history)}")
        return max(r["val_acc"] for r in history)

    return run


def summary(study: optuna.Study) -> dict:
    states = [t.state for t in study.trials]
    count = lambda state: sum(s == state for s in states)
    retried = {RETRY.retried_trial_number(t) for t in study.trials}
    report = {
        "trials": len(states),
        "complete": count(optuna.trial.TrialState.COMPLETE),
        "pruned": count(optuna.trial.TrialState.PRUNED),
        "failed": count(optuna.trial.TrialState.FAIL),
        # Failed because their worker was killed, and tried again (resumed) as another trial.
        "failed_and_retried": sum(t.state == optuna.trial.TrialState.FAIL and t.number in retried for t in study.trials),
        "running": count(optuna.trial.TrialState.RUNNING),
    }
    if report["complete"]:
        best = study.best_trial
        report["best"] = {
            "number": best.number,
            "val_acc": best.value,
            "params": best.params,
            "checkpoint": best.user_attrs.get("checkpoint"),
            "host": best.user_attrs.get("host"),
        }
        test = test_figures(best.user_attrs.get("run"))
        if test is not None:
            report["best"]["test_of_chosen_trial"] = test
    return report


def test_figures(run):
    """The test figures a run held out from measured once, with its best weights, after training (None when it
    chose on the test set, or its directory is on another machine)."""
    state = Path(run or "") / "last.safetensors"
    if not state.is_file():
        return None
    return json.loads(lenet5.Model.load(state).metadata["train_state"]).get("test")


def lost_creation_race(error: Exception) -> bool:
    """Whether `error` is what a worker gets when another creates the same tables or study at the same moment
    (a duplicate table, type, index or study name): the only error worth a retry."""
    if isinstance(error, optuna.exceptions.DuplicatedStudyError):
        return True
    text = str(error).lower()
    return any(s in text for s in ("already exists", "duplicate key", "unique constraint", "uniqueviolation"))


def open_study(args) -> optuna.Study:
    """The study, created by whichever worker comes first. Workers started together on a new database race to
    create its tables; the losers wait a moment and open what the winner made. Any other error (no driver, a
    wrong password, an unreachable host) ends the worker at once."""
    for attempt in range(10):
        try:
            return optuna.create_study(
                study_name=args.study_name,
                storage=storage_of(args.storage, args.heartbeat),
                direction="maximize",
                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
                load_if_exists=True,
            )
        except Exception as error:
            if attempt == 9 or not lost_creation_race(error):
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def existing_study(args) -> optuna.Study:
    """The study, which must exist: a summary never creates an empty one for a mistyped name."""
    try:
        return optuna.load_study(study_name=args.study_name, storage=storage_of(args.storage))
    except KeyError:
        raise SystemExit(f"error: no study named {args.study_name!r} in {args.storage}") from None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", default="sqlite:///lenet5-study.db", help="Optuna storage URL, or journal:PATH")
    p.add_argument("--study-name", default="lenet5")
    p.add_argument("--trials", type=int, default=10, help="trials this worker runs")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", default="optuna-trials", help="directory of the trials' runs")
    p.add_argument("--data", help="data root (default: $LENET5_DATA, else ./data)")
    p.add_argument("--dataset", help="mnist, fashion-mnist, or a directory")
    p.add_argument("--train-limit", type=int)
    p.add_argument("--test-limit", type=int)
    p.add_argument("--threads", type=int, help="threads per trial (default: every core)")
    p.add_argument("--seed", type=int, default=0, help="seed of every trial's weights and shuffles")
    p.add_argument("--val-split", type=float, default=lenet5.TUNING_VAL_SPLIT,
                   help="share of each class of the training images held out to judge trials on "
                        "(default %(default)s; 0 judges on the test set)")
    p.add_argument("--heartbeat", type=int, default=60, metavar="SECONDS",
                   help="a running trial's heartbeat (database storages): one silent for three beats, its worker "
                        "killed, is resumed by the next worker (default %(default)s; 0 turns it off)")
    p.add_argument("--summary", action="store_true", help="print the study's counts and best trial as JSON, and exit")
    p.add_argument("--best-checkpoint", action="store_true", help="print the best trial's checkpoint path, and exit")
    args = p.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The heartbeat's retry is marked experimental; it is what makes killed workers' trials resume.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        study = existing_study(args) if args.summary or args.best_checkpoint else open_study(args)
    except (ImportError, optuna.exceptions.OptunaError, OSError) as error:
        # No driver for the URL, a refused connection or login, a bad URL: one line, at once.
        raise SystemExit(f"error: cannot open the study in {args.storage}: {error}".splitlines()[0]) from None
    except Exception as error:
        if type(error).__module__.split(".")[0] != "sqlalchemy":
            raise
        raise SystemExit(f"error: cannot open the study in {args.storage}: {error}".splitlines()[0]) from None
    if args.best_checkpoint:
        best = summary(study).get("best")
        if best is None:
            print(f"no trial of study {args.study_name} has finished", file=sys.stderr)
            return 1
        print(best["checkpoint"])
        return 0
    if not args.summary:
        signal.signal(signal.SIGTERM, on_sigterm)
        try:
            study.optimize(objective(args), n_trials=args.trials, callbacks=[stop_if_preempted])
            stop_if_preempted()
        except Preempted:
            print("stopped by SIGTERM: the running trial is resumed by the next worker", file=sys.stderr)
            return 143
    print(json.dumps(summary(study), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
