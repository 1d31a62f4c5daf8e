"""``tune`` on tiny data: trials in a SQLite study, best.yaml that ``fit`` loads, a search file refused before
anything runs, failing trials recorded while the study goes on, and several workers sharing one study (SQLite, and a
real PostgreSQL server started for the test)."""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import optuna
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from mnist_lit.cli import main
from mnist_lit.cli.tune import build_parser as tune_parser
from mnist_lit.errors import UserError
from mnist_lit.experiments.search_space import load_search_space
from mnist_lit.experiments.storage import storage_url
from mnist_lit.experiments.trials import FAIL_REASON, FiniteLoss
from tests.helpers import CONFIGS, REPO_ROOT, TinyMNIST

TINY = [
    "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    "--data.batch_size=32", "--data.eval_batch_size=16", "--trainer.callbacks=[]",
]  # fmt: skip
SEARCH = """
sampler: {name: TPESampler, args: {seed: 0}}
params:
  model.init_args.lr: {low: 0.001, high: 0.02, log: true}
  data.batch_size: {choices: [16, 32]}
"""
STUDY = Path("lightning_logs/fast/study_fast")
#: ``python -m mnist_lit`` in a child process, with the tiny files of the test's own folder (``data``) accepted.
WORKER = (
    "from mnist_lit.data import idx\n"
    "from tests.helpers import tiny_specs\n"
    "idx.MNIST_FILES = tiny_specs('data')\n"
    "from mnist_lit.cli.dispatch import entry_point\n"
    "entry_point()\n"
)


def search_file(text: str = SEARCH) -> Path:
    path = Path("search.yaml")
    path.write_text(text)
    return path


def tune(*extra: str, search: str = SEARCH) -> list[str]:
    return ["tune", "--config", str(CONFIGS / "fast.yaml"), "--search", str(search_file(search)), *TINY, *extra]


def load(storage: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name="fast", storage=storage_url(storage or f"sqlite:///{STUDY / 'study.db'}"))


def test_a_study_of_four_trials_is_kept_in_sqlite_and_its_best_config_fits(tiny_mnist: TinyMNIST, capsys) -> None:
    main(tune("--trials", "4"))
    out = capsys.readouterr().out
    study = load()
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    for trial in study.trials:  # every trial validated on images held out of the training set, and never tested
        config = yaml.safe_load((STUDY / f"trial_{trial.number}" / "config.yaml").read_text())
        assert config["data"]["val_split"] == "random" and config["test_after_fit"] is False
        assert config["model"]["init_args"]["lr"] == trial.params["model.init_args.lr"]
    assert "trial  state" in out and out.count("COMPLETE") >= 4
    for name in ("best.yaml", "trials.txt", "optimization_history.png", "param_importances.png"):
        assert (STUDY / name).stat().st_size > 0
    best = yaml.safe_load((STUDY / "best.yaml").read_text())
    assert best["model"]["init_args"]["lr"] == study.best_params["model.init_args.lr"]
    assert best["data"]["val_split"] == "test" and best["test_after_fit"] is True  # the config's own, not the trials'
    main(["fit", "--config", str(STUDY / "best.yaml")])
    (run,) = Path("lightning_logs/fast").glob("version_*")
    fitted = yaml.safe_load((run / "config.yaml").read_text())
    assert fitted["model"]["init_args"]["lr"] == study.best_params["model.init_args.lr"]
    assert fitted["data"]["batch_size"] == study.best_params["data.batch_size"]

    main(tune("--trials", "5"))  # the same study again: it continues with one trial more
    assert len(load().trials) == 5


def test_a_search_file_with_an_unknown_key_exits_2_naming_it_before_anything_runs(
    tiny_mnist: TinyMNIST, capsys
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(tune("--trials", "2", search="params:\n  model.init_args.learning_rate: {low: 0.001, high: 0.1}\n"))
    assert exc.value.code == 2
    assert "model.init_args.learning_rate is not a key of the configuration" in capsys.readouterr().err
    assert not Path("lightning_logs").exists()


def test_a_range_the_config_refuses_exits_2(tiny_mnist: TinyMNIST, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(tune("--trials", "2", search="params:\n  data.batch_size: {low: 0, high: 64}\n"))
    assert exc.value.code == 2 and "data.batch_size = 0 is refused" in capsys.readouterr().err


def test_a_failing_trial_is_recorded_with_its_reason_and_the_study_goes_on(tiny_mnist: TinyMNIST, capsys) -> None:
    # Random sampling with seed 0 draws lr 0.01 first, then -1.0, which Adam refuses.
    search = "sampler: {name: RandomSampler, args: {seed: 0}}\nparams:\n  model.init_args.lr: {choices: [-1.0, 0.01]}\n"
    main(tune("--trials", "2", search=search))
    trials = {t.params["model.init_args.lr"]: t for t in load().trials}
    assert trials[-1.0].state == optuna.trial.TrialState.FAIL
    assert "Invalid learning rate: -1.0" in trials[-1.0].user_attrs[FAIL_REASON]
    assert trials[0.01].state == optuna.trial.TrialState.COMPLETE
    assert "Invalid learning rate" in capsys.readouterr().out  # in the trials table


def test_a_non_finite_loss_fails_the_run_by_the_next_logged_step_or_the_epochs_end() -> None:
    """The check is read where Lightning logs (every log_every_n_steps) and at the epoch's end, not every step."""
    nan, fine = {"loss": torch.tensor(float("nan"))}, {"loss": torch.tensor(0.5)}
    between_logs = SimpleNamespace(current_epoch=2, global_step=3, log_every_n_steps=50)
    callback = FiniteLoss()
    callback.on_train_batch_end(between_logs, None, nan, None, 3)  # type: ignore[arg-type]
    callback.on_train_batch_end(between_logs, None, fine, None, 4)  # type: ignore[arg-type]
    with pytest.raises(FloatingPointError, match="NaN or infinite in epoch 2, by its end"):
        callback.on_train_epoch_end(between_logs, None)  # type: ignore[arg-type]
    at_a_log = SimpleNamespace(current_epoch=0, global_step=50, log_every_n_steps=50)
    with pytest.raises(FloatingPointError, match="in epoch 0, by batch 7"):
        FiniteLoss().on_train_batch_end(at_a_log, None, nan, None, 7)  # type: ignore[arg-type]
    healthy = FiniteLoss()
    healthy.on_train_batch_end(at_a_log, None, fine, None, 7)  # type: ignore[arg-type]
    healthy.on_train_epoch_end(at_a_log, None)  # type: ignore[arg-type]


class BothWorkersInATrial(Callback):
    """Hold each worker's trial at its start until two workers have started one (marker files in the folder named
    by ``$MNIST_LIT_TEST_BARRIER``): both have then sampled before either finishes, whichever starts first (on a
    loaded machine one worker could otherwise run every trial before the other has imported torch)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        folder = Path(os.environ["MNIST_LIT_TEST_BARRIER"])
        (folder / str(os.getpid())).touch()
        for _ in range(6000):  # a safety net against a worker that died, not a timing assumption
            if len(list(folder.iterdir())) >= 2:
                return
            time.sleep(0.05)
        raise RuntimeError("the other worker never started a trial")


def two_workers(
    tiny: TinyMNIST, trials: int, storage: list[str], study_dirs: tuple[Path, Path] | None = None
) -> list[subprocess.CompletedProcess]:
    """Two ``tune`` processes started together on one study, each holding its first trial until both run one;
    with ``study_dirs``, each in a folder of its own (as on two machines: they share no file lock)."""
    barrier = Path("barrier")
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MNIST_LIT_TEST_BARRIER": str(barrier.resolve())}
    hold = f"--trainer.callbacks+={__name__}.BothWorkersInATrial"
    folders = [["--study_dir", str(d)] for d in study_dirs] if study_dirs else [[], []]
    commands = [[sys.executable, "-c", WORKER, *tune("--trials", str(trials), hold, *storage, *f)] for f in folders]
    workers = [
        subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands
    ]
    done = []
    for command, worker in zip(commands, workers, strict=True):
        out, err = worker.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(command, worker.returncode, out, err))
    return done


def assert_no_point_tried_twice(trials: list[optuna.trial.FrozenTrial]) -> None:
    """Every trial's parameters differ from every other's, except a re-queued trial's (a killed worker's trial run
    again), which repeat those of the trial it re-runs."""
    for a, b in itertools.combinations(sorted(trials, key=lambda t: t.number), 2):
        if a.params == b.params:
            assert a.number in b.system_attrs.get("retry_history", []), (
                f"trials {a.number} and {b.number} tried the same parameters {a.params}"
            )


def assert_exactly_once(study: optuna.Study, workers: list[subprocess.CompletedProcess], trials: int) -> None:
    for worker in workers:
        assert worker.returncode == 0, worker.stderr[-3000:]
    assert len(study.trials) == trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    started = sorted(
        int(m[1]) for w in workers for m in re.finditer(r"^Trial (\d+): .* in \S*trial_\d+$", w.stdout, re.M)
    )
    assert started == list(range(trials))  # each trial run once, by one worker or the other
    assert all("A new study created" in w.stderr or "Using an existing study" in w.stderr for w in workers)
    # Both workers ran a trial (each held its first until the other had started one), yet none repeats another's.
    assert_no_point_tried_twice(study.trials)


@pytest.mark.slow
def test_two_workers_on_one_sqlite_study_run_exactly_the_requested_trials_all_different(
    tiny_mnist: TinyMNIST,
) -> None:
    workers = two_workers(tiny_mnist, 4, [])
    assert_exactly_once(load(), workers, 4)


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of our own on 127.0.0.1 (a free port) with its data in a temporary folder, stopped after
    the test. PostgreSQL refuses to run as root: as root, it runs as the `postgres` user of Debian's package."""
    pytest.importorskip("psycopg2", reason="psycopg2 (psycopg2-binary) is needed to talk to PostgreSQL")
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server here (no pg_ctl; Debian: apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="mnist_lit_pg_"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser to start the server as `postgres`")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]
    init = subprocess.run([*prefix, *initdb], capture_output=True, text=True)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip()[-500:]}")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
                            "-w", "start"], capture_output=True, text=True)  # fmt: skip
    if start.returncode != 0:
        log = (root / "log").read_text() if (root / "log").is_file() else start.stderr
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"the PostgreSQL server did not start: {log.strip()[-500:]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"  # as tune --help writes it: no driver named
    finally:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_machines_on_a_real_postgresql_run_exactly_the_requested_trials_all_different(
    tiny_mnist: TinyMNIST, postgres_url: str
) -> None:
    """Two workers that share no file lock (each its own study folder, as on two machines) and one PostgreSQL
    study: the database alone decides who starts which trial."""
    workers = two_workers(tiny_mnist, 4, ["--storage", postgres_url], (Path("machine_a"), Path("machine_b")))
    assert_exactly_once(load(postgres_url), workers, 4)
    assert not STUDY.exists()


def test_the_postgresql_url_tune_help_gives_opens_the_study(tiny_mnist: TinyMNIST, postgres_url: str) -> None:
    """``postgresql://user:password@host/db``, as ``--help`` writes it, with psycopg2 the installed driver (SQLAlchemy
    2.1 maps a plain postgresql:// to psycopg 3, which is not)."""
    assert "postgresql://user:password@host/db" in " ".join(tune_parser().format_help().split())
    main(tune("--trials", "1", "--storage", postgres_url))
    assert [t.state for t in load(postgres_url).trials] == [optuna.trial.TrialState.COMPLETE]


def test_a_plain_postgresql_url_gets_the_installed_driver_or_says_what_to_install(monkeypatch) -> None:
    pytest.importorskip("psycopg2")
    url = storage_url("postgresql://me:secret@dbhost:5433/mnist")
    assert url.startswith(("postgresql+psycopg2://", "postgresql+psycopg://")) and url.endswith(
        "me:secret@dbhost:5433/mnist"
    )
    assert storage_url("postgresql+psycopg2://me@h/db") == "postgresql+psycopg2://me@h/db"  # a named driver stays
    assert storage_url("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)  # no driver at all
    with pytest.raises(
        UserError, match=r"postgresql://me:\*\*\*@dbhost:5433/mnist: PostgreSQL needs a driver.*psycopg2-binary"
    ):
        storage_url("postgresql://me:secret@dbhost:5433/mnist")


@pytest.mark.filterwarnings("ignore:QMCSampler is experimental")  # Optuna marks the sampler itself experimental
def test_each_worker_samples_with_the_search_files_seed_plus_its_number() -> None:
    def sampler(text: str, worker: int) -> optuna.samplers.BaseSampler:
        return load_search_space(search_file(text), lambda key: True, lambda k, v: None).make_sampler(worker)

    def first_draws(made: optuna.samplers.BaseSampler) -> list[float]:
        study = optuna.create_study(sampler=made)
        return [study.ask().suggest_float("x", 0, 1) for _ in range(3)]

    assert first_draws(sampler(SEARCH, 0)) == first_draws(optuna.samplers.TPESampler(seed=0))  # one worker: as before
    assert first_draws(sampler(SEARCH, 2)) == first_draws(optuna.samplers.TPESampler(seed=2))
    assert first_draws(sampler(SEARCH, 1)) != first_draws(sampler(SEARCH, 0))
    qmc = "sampler: {name: QMCSampler, args: {seed: 7}}\nparams:\n  data.batch_size: {choices: [16, 32]}\n"
    assert sampler(qmc, 3)._seed == 7  # one scrambled sequence for all workers, as QMCSampler asks
    assert first_draws(sampler(qmc, 3)._independent_sampler) == first_draws(optuna.samplers.RandomSampler(seed=10))


class KillInTrial(Callback):
    """SIGKILL this process when the run in the folder named by ``$MNIST_LIT_TEST_KILL_RUN`` starts training."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if Path(trainer.log_dir).name == os.environ.get("MNIST_LIT_TEST_KILL_RUN"):
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_a_killed_tune_started_again_reruns_the_killed_trial_and_loses_none(tiny_mnist: TinyMNIST, capsys) -> None:
    args = tune("--trials", "3", f"--trainer.callbacks+={__name__}.KillInTrial")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MNIST_LIT_TEST_KILL_RUN": "trial_1"}
    killed = subprocess.run([sys.executable, "-c", WORKER, *args], env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = load().trials
    assert [t.state for t in before] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]

    main(args)  # waits until the killed trial's heartbeat is stale, then runs its parameters again
    trials = load().trials
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert [t.params for t in trials[2:]].count(before[1].params) == 1  # the killed trial, run again, once
    assert_no_point_tried_twice(trials)  # the restarted worker does not draw trial 0's parameters again
    assert FAIL_REASON not in trials[1].user_attrs and "its worker stopped" in capsys.readouterr().out
