"""``python -m mnist_lit tune --config C --search S --trials N [fit options]``: an Optuna search of the config keys
the search file names (see :mod:`mnist_lit.experiments.search_space`), judged on a validation split held out of the
training images (the test set is never used to choose), in a database that survives the process.

Each trial is a ``fit`` in ``<study folder>/trial_K``; the study is in ``<study folder>/study.db`` (SQLite) unless
``--storage`` names another (``postgresql://...``), which any number of ``tune`` processes, on any machines, can
share: each runs trials until the study holds ``--trials`` finished ones.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import math
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mnist_lit.errors import UserError

try:
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
    from optuna.trial import TrialState
    from optuna_integration import PyTorchLightningPruningCallback
except ImportError as err:  # the `experiments` extra
    raise UserError(f"tune needs Optuna and optuna-integration ({err}): pip install 'mnist_lit[experiments]'") from err

from mnist_lit.cli.fit_runs import FitConfig, run_fit
from mnist_lit.experiments.figures import save_study_figures
from mnist_lit.experiments.search_space import SearchSpace, SearchSpaceError, cli_args, load_search_space
from mnist_lit.experiments.trials import FAIL_REASON, FiniteLoss, Heartbeat, tally
from mnist_lit.utils.io import atomic_write_bytes, free_name

#: Seconds between a running trial's heartbeats, and without one after which its worker is taken for dead.
HEARTBEAT_S, GRACE_S = 5, 20
#: Validation fraction held out of the training images when the config itself validates on the test set.
HELD_OUT_FRACTION = 0.2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_lit tune",
        description="Search hyperparameters with Optuna. Any other option is passed to every trial's `fit`.",
    )
    parser.add_argument("--config", action="append", default=[], required=True, help="the fit config (repeatable)")
    parser.add_argument(
        "--search", required=True, type=Path, help="the search file: keys, ranges, metric, sampler, pruner"
    )
    parser.add_argument("--trials", required=True, type=int, help="finished trials the study should hold (all workers)")
    parser.add_argument("--study_name", help="default: the config's logger name (e.g. fast)")
    parser.add_argument(
        "--storage", help="an Optuna RDB URL (postgresql://user@host/db); default: sqlite in the study folder"
    )
    parser.add_argument(
        "--study_dir", type=Path, help="where trials run and results go; default <save_dir>/<name>/study_<study_name>"
    )
    return parser


def main(argv: list[str]) -> None:
    parser = build_parser()
    args, fit_options = parser.parse_known_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    fit = FitConfig(args.config, fit_options)
    try:
        space = load_search_space(args.search, fit.has, fit.refusal)
    except SearchSpaceError as err:
        parser.error(str(err))  # exit status 2, as for any bad option, before anything runs
    logger = fit.logger_args()
    name = args.study_name or logger.get("name") or Path(args.config[-1]).stem
    folder = args.study_dir or Path(logger.save_dir) / (logger.get("name") or "") / f"study_{name}"
    folder.mkdir(parents=True, exist_ok=True)
    url = args.storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    forced = held_out_validation(fit)
    # Heartbeats are used here with ask-and-tell, which Optuna supports but warns about; fail_stale_trials is
    # "experimental" since Optuna 2.9.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    with worker_lock(folder) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a new database's tables are created once, not by two workers at a time
        try:
            study = open_study(url, name, space)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
        print(f"Study {name!r} in {url}; trials run in {folder}", flush=True)
        run_trials(study, space, fit, forced, folder, args.trials, lock)
    report(study, space, fit, folder)


def open_study(url: str, name: str, space: SearchSpace) -> optuna.Study:
    """The study ``name`` in ``url``, created if new; with heartbeats, so a killed worker's trial is run again."""
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(3):  # workers on other machines may be creating the same tables right now
        try:
            return _open_study(url, name, space, engine)
        except UserError:
            if attempt == 2:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def _open_study(url: str, name: str, space: SearchSpace, engine: dict[str, Any]) -> optuna.Study:
    try:
        storage = RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=None),
        )
        return optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=space.make_sampler(),
            pruner=space.make_pruner(),
            direction=space.direction,
            load_if_exists=True,
        )
    except (ImportError, ValueError, optuna.exceptions.OptunaError) as err:
        raise UserError(f"--storage {url}: cannot open the study ({err}).") from err
    except Exception as err:  # SQLAlchemy's OperationalError: no server, wrong password, ...
        raise UserError(f"--storage {url}: cannot connect ({type(err).__name__}: {err}).") from err


def held_out_validation(fit: FitConfig) -> list[str]:
    """Options that make every trial validate on images held out of the training set, never on the test set, and
    skip the test: a config validating on the test set (or not at all) is switched to a random held-out split."""
    forced = ["--test_after_fit=false"]
    data = fit.config.data
    if data.val_split == "test":
        forced += ["--data.val_split=random", f"--data.val_fraction={HELD_OUT_FRACTION}"]
    if fit.config.trainer.get("limit_val_batches") == 0:
        forced.append("--trainer.limit_val_batches=1.0")
    return forced


@contextmanager
def worker_lock(folder: Path) -> Iterator[Any]:
    """A file lock the workers of one machine take to decide, one at a time, whether to start another trial."""
    with open(folder / ".tune.lock", "a") as handle:
        yield handle


def run_trials(
    study: optuna.Study, space: SearchSpace, fit: FitConfig, forced: list[str], folder: Path, n: int, lock: Any
) -> None:
    """Run trials until the study holds ``n`` finished ones, counting every worker's: a trial is only started while
    finished + running + queued trials are fewer than ``n``, decided under the lock (exact among the workers of one
    machine; across machines, two may both start the last trial in the same instant). Then wait for the others."""
    while True:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            fail_stale_trials(study)  # a killed worker's trial: failed, and queued again with the same parameters
            counts = tally(study.get_trials(deepcopy=False))
            trial = study.ask() if counts.waiting or counts.claimed < n else None
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
        if trial is not None:
            run_trial(study, trial, space, fit, forced, folder)
        elif counts.running:
            time.sleep(HEARTBEAT_S)  # other workers' trials (or a dead one, until it is found stale)
        else:
            return


def run_trial(
    study: optuna.Study, trial: optuna.Trial, space: SearchSpace, fit: FitConfig, forced: list[str], folder: Path
) -> None:
    """One trial: sample, fit, and tell Optuna the validation metric, PRUNED, or FAIL with the reason."""
    values = space.suggest(trial)
    overrides = cli_args(values)
    trial.set_user_attr("overrides", overrides)
    run_dir = free_name(folder / f"trial_{trial.number}")  # numbers restart in another study of the same folder
    args = [
        *fit.args, *overrides, *forced,
        f"--trainer.logger.init_args.save_dir={folder}",
        "--trainer.logger.init_args.name=",
        f"--trainer.logger.init_args.version={run_dir.name}",
    ]  # fmt: skip
    print(f"\nTrial {trial.number}: {' '.join(overrides)} in {run_dir}", flush=True)
    pruning = PyTorchLightningPruningCallback(trial, monitor=space.metric)
    try:
        with Heartbeat(study._storage, trial._trial_id, HEARTBEAT_S):
            cli = run_fit(args, callbacks=[pruning, FiniteLoss()])
        pruning.check_pruned()
        logged = cli.trainer.callback_metrics.get(space.metric)
        if logged is None:
            raise KeyError(f"the run logged no {space.metric} (the search file's metric)")
        value = float(logged)
        if not math.isfinite(value):
            raise FloatingPointError(f"{space.metric} is {value}")
    except optuna.TrialPruned as pruned:
        study.tell(trial, state=TrialState.PRUNED)
        print(f"Trial {trial.number}: pruned ({pruned})", flush=True)
    except (KeyboardInterrupt, SystemExit):
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(trial.params)  # interrupted, not failed: the next worker runs these parameters again
        raise
    except Exception as err:  # the trial's own failure (a bad combination, NaN, out of memory): record it, go on
        reason = f"{type(err).__name__}: {err}"
        trial.set_user_attr(FAIL_REASON, reason[:2000])
        study.tell(trial, state=TrialState.FAIL)
        print(f"Trial {trial.number}: FAILED: {reason}", file=sys.stderr, flush=True)
    else:
        study.tell(trial, value)
        print(f"Trial {trial.number}: {space.metric} = {value:.5f}", flush=True)


def trials_table(study: optuna.Study, metric: str) -> str:
    """Every trial: number, state, value, seconds, parameters, and why it failed."""
    rows = [f"{'trial':>5}  {'state':<8}  {metric:>9}  {'seconds':>7}  parameters"]
    for t in study.get_trials(deepcopy=False):
        took = t.duration
        seconds = "-" if took is None else f"{took.total_seconds():.1f}"
        value = "-" if t.value is None else f"{t.value:.5f}"
        params = " ".join(f"{k}={v}" for k, v in t.params.items())
        reason = f"  ({t.user_attrs[FAIL_REASON]})" if FAIL_REASON in t.user_attrs else ""
        if t.state == TrialState.FAIL and not reason:
            reason = "  (its worker stopped; run again as a later trial)"
        rows.append(f"{t.number:>5}  {t.state.name:<8}  {value:>9}  {seconds:>7}  {params}{reason}")
    return "\n".join(rows)


def report(study: optuna.Study, space: SearchSpace, fit: FitConfig, folder: Path) -> None:
    """The trials table (also in trials.txt), best.yaml and Optuna's figures, in the study folder."""
    table = trials_table(study, space.metric)
    atomic_write_bytes(folder / "trials.txt", (table + "\n").encode())
    print(f"\n{table}\n")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        print("No trial completed: no best.yaml.")
        return
    best = study.best_trial
    best_yaml = folder / "best.yaml"
    header = f"# tune: best trial {best.number} of study {study.study_name!r}, {space.metric} = {best.value:.5f}\n"
    atomic_write_bytes(best_yaml, (header + fit.dump(best.user_attrs["overrides"])).encode())
    print(f"Best trial {best.number}: {space.metric} = {best.value:.5f} with {' '.join(best.user_attrs['overrides'])}")
    print(f"Its full config: {best_yaml} (fit --config {best_yaml}, or sweep --config {best_yaml} --seeds 5)")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    for path in save_study_figures(study, folder):
        print(f"Wrote {path}")
