"""examples/optuna_sweep.py as the README runs it: two worker processes share one SQLite study, finish it with
trials pruned through the per-epoch callback, and the best trial's checkpoint passes `lenet5 eval`."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import lenet5
from conftest import REPO

try:
    import optuna  # noqa: F401
except ImportError:
    if os.environ.get("LENET5_REQUIRE_OPTUNA"):
        raise
    pytest.skip("optuna is not installed (pip install optuna)", allow_module_level=True)

EXAMPLE = REPO / "examples" / "optuna_sweep.py"


def example_module():
    """The example, imported as a module (its main is not run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("optuna_sweep", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def test_two_workers_share_one_study_prune_trials_and_the_best_checkpoint_evaluates(tmp_path, data_root, cli):
    common = [
        "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--study-name", "ci", "--out", str(tmp_path / "trials"),
        "--data", str(data_root), "--epochs", "4", "--train-limit", "4000", "--test-limit", "1000",
    ]
    workers = [
        subprocess.Popen([sys.executable, str(EXAMPLE), *common, "--trials", "5", "--threads", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for w in workers:
        out, err = w.communicate(timeout=600)
        assert w.returncode == 0, err
    report = json.loads(subprocess.run([sys.executable, str(EXAMPLE), *common, "--summary"], capture_output=True,
                                       text=True, check=True).stdout)
    assert report["trials"] == 10 and report["failed"] == 0, report
    assert report["pruned"] >= 1 and report["complete"] >= 1, report
    best = report["best"]
    checkpoint = subprocess.run([sys.executable, str(EXAMPLE), *common, "--best-checkpoint"], capture_output=True,
                                text=True, check=True).stdout.strip()
    assert checkpoint == best["checkpoint"]
    evaluated = json.loads(cli("eval", "--weights", checkpoint, "--data", data_root, "--json"))
    # The trial's val_acc is on the first 1,000 test images; `lenet5 eval` counts all 10,000.
    assert evaluated["total"] == 10000
    assert abs(evaluated["accuracy"] - best["val_acc"]) < 0.05, (evaluated, best)
    trials = sorted(p.name for p in (tmp_path / "trials").iterdir())
    assert len(trials) == 10, trials
    # Trials are judged on held-out training images; the test set is reported for the chosen trial alone.
    assert best["test_of_chosen_trial"]["total"] == 1000, best


def test_a_storage_that_cannot_be_opened_or_a_missing_study_fails_at_once_in_one_line(tmp_path):
    started = time.monotonic()
    missing = subprocess.run([sys.executable, str(EXAMPLE), "--storage", f"sqlite:///{tmp_path / 'none.db'}",
                              "--study-name", "typo", "--summary"], capture_output=True, text=True)
    assert missing.returncode != 0 and missing.stderr.strip() == \
        f"error: no study named 'typo' in sqlite:///{tmp_path / 'none.db'}", missing.stderr
    try:
        import psycopg  # noqa: F401
    except ImportError:
        no_driver = subprocess.run([sys.executable, str(EXAMPLE), "--storage",
                                    "postgresql+psycopg://user:pw@127.0.0.1:9/optuna"], capture_output=True, text=True)
        assert no_driver.returncode != 0, no_driver.stderr
        lines = no_driver.stderr.strip().splitlines()
        assert len(lines) == 1 and "psycopg" in lines[0], no_driver.stderr
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("backend,how", [("sqlite", "SIGKILL"), ("sqlite", "SIGTERM"), ("postgresql", "SIGKILL")])
def test_a_worker_killed_mid_trial_leaves_it_to_be_resumed_and_its_epochs_are_not_trained_twice(
        tmp_path, data_root, backend, how):
    storage = {"sqlite": f"sqlite:///{tmp_path / 'study.db'}", "postgresql": os.environ.get("LENET5_TEST_POSTGRES")}
    if storage[backend] is None:
        if os.environ.get("LENET5_REQUIRE_POSTGRES"):
            raise AssertionError("LENET5_TEST_POSTGRES is not set")
        pytest.skip("no PostgreSQL server (set LENET5_TEST_POSTGRES to a postgresql+psycopg:// URL)")
    study = f"killed-{os.getpid()}-{time.monotonic_ns()}"
    out = tmp_path / "trials"
    common = [sys.executable, str(EXAMPLE), "--storage", storage[backend], "--study-name", study, "--out", str(out),
              "--data", str(data_root), "--epochs", "6", "--train-limit", "10000", "--test-limit", "1000",
              "--heartbeat", "1", "--threads", "1"]
    started = time.monotonic()
    first = subprocess.Popen([*common, "--trials", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "trial-0000" / "metrics.jsonl"
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 1):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() - started < 120
        time.sleep(0.02)
    # SIGKILL leaves no chance to tell the study anything; SIGTERM (a scheduler's pre-emption) stops the trial at
    # its last finished epoch and leaves it running, for the heartbeat to hand on.
    first.send_signal(getattr(signal, how))
    _, err = first.communicate(timeout=60)
    assert first.returncode == {"SIGKILL": -9, "SIGTERM": 143}[how], err
    # The next workers come once the trial is stale (silent for three beats): had they come sooner, they could
    # run all their trials before it went stale and leave it running, as Optuna looks for stale trials only as
    # each trial begins.
    time.sleep(3.5)
    workers = [subprocess.Popen([*common, "--trials", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err
    report = json.loads(subprocess.run([*common, "--summary"], capture_output=True, text=True, check=True).stdout)
    assert report["running"] == 0, report
    assert report["failed"] == report["failed_and_retried"] == 1, report
    assert report["complete"] + report["pruned"] == report["trials"] - 1, report

    # The retry went on in the first try's directory, each epoch trained once, to the bits of a run that was
    # never interrupted.
    loaded = optuna.load_study(study_name=study, storage=storage[backend])
    retry = next(t for t in loaded.trials if t.user_attrs.get("resumed_from") == 0)
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == list(range(1, len(epochs) + 1)), epochs
    alone = tmp_path / "alone"
    lenet5.train(epochs=len(epochs), out=alone, data=data_root, train_limit=10000, test_limit=1000, threads=1,
                 seed=0, val_split=lenet5.TUNING_VAL_SPLIT, **retry.params)
    resumed = lenet5.Model.load(out / "trial-0000" / "last.safetensors").state_dict()
    uninterrupted = lenet5.Model.load(alone / "last.safetensors").state_dict()
    assert all(np.array_equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_the_journal_file_storage_runs_a_study(tmp_path, data_root):
    common = [sys.executable, str(EXAMPLE), "--storage", f"journal:{tmp_path / 'journal.log'}", "--study-name", "j",
              "--out", str(tmp_path / "trials"), "--data", str(data_root), "--epochs", "2", "--train-limit", "2000",
              "--test-limit", "500", "--threads", "1"]
    subprocess.run([*common, "--trials", "2"], capture_output=True, text=True, check=True)
    report = json.loads(subprocess.run([*common, "--summary"], capture_output=True, text=True, check=True).stdout)
    assert report["trials"] == 2 and report["complete"] + report["pruned"] == 2, report
    assert report["best"]["test_of_chosen_trial"]["total"] == 500, report


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_sigterm_whose_exception_is_lost_still_stops_the_worker():
    # A signal that lands in a garbage collector's callback (as in the database driver) has its exception printed
    # and dropped; the flag the handler leaves stops the worker at the next epoch's end or between trials.
    example = example_module()
    example.stop_if_preempted()  # nothing pending: goes on

    class Collected:
        def __del__(self):
            example.on_sigterm(signal.SIGTERM, None)

    Collected()  # the handler raises inside __del__, where Python drops the exception
    with pytest.raises(example.Preempted):
        example.stop_if_preempted()


def test_workers_changing_one_trial_at_the_same_moment_on_sqlite_change_it_once(tmp_path):
    # Two workers that find the same stale trial must not both fail it (each would queue a retry, and two would
    # resume one run directory), nor both take the same waiting trial. Four storages, as four workers would hold,
    # try at the same moment, round after round; exactly one may win each time.
    import threading

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    example = example_module()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=example.storage_of(url), study_name="race")
    workers = [example.storage_of(url) for _ in range(4)]

    def winners(trial_id, state):
        won, start = [], threading.Barrier(len(workers))

        def attempt(storage):
            start.wait()
            try:
                if storage.set_trial_state_values(trial_id, state=state):
                    won.append(storage)
            except UpdateFinishedTrialError:
                pass

        threads = [threading.Thread(target=attempt, args=(w,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return len(won)

    for _ in range(20):
        study.enqueue_trial({})
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[0]
        assert winners(waiting._trial_id, TrialState.RUNNING) == 1
        assert winners(waiting._trial_id, TrialState.FAIL) == 1
