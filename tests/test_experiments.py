"""The pure parts of experiments: seed lists, statistics against scipy, summaries, search files, the figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from scipy import stats as scipy_stats

from mnist_lit.errors import UserError
from mnist_lit.experiments.figures import seed_accuracies
from mnist_lit.experiments.search_space import SearchSpaceError, cli_args, load_search_space
from mnist_lit.experiments.seeds import parse_seeds
from mnist_lit.experiments.stats import compare, sentence, spread
from mnist_lit.experiments.summary import build_summary, format_table, read_summary, write_summary
from mnist_lit.experiments.trials import FAIL_REASON, tally


@pytest.mark.parametrize(
    ("text", "seeds"), [("0-4", [0, 1, 2, 3, 4]), ("0,3,7", [0, 3, 7]), ("3", [0, 1, 2]), (" 2 - 3 ", [2, 3])]
)
def test_seeds_take_a_range_a_list_or_a_count(text: str, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["0", "4-2", "1,1", "a", "1;2", "-1", ""])
def test_bad_seeds_are_refused_with_the_forms_that_work(text: str) -> None:
    with pytest.raises(UserError, match="--seeds"):
        parse_seeds(text)


def test_spread_is_mean_sd_and_the_student_t_interval() -> None:
    values = [0.991, 0.9925, 0.9902, 0.9931, 0.9915]
    s = spread(values)
    sem = np.std(values, ddof=1) / math.sqrt(5)
    t = scipy_stats.t.ppf(0.975, 4)
    assert s.mean == pytest.approx(np.mean(values))
    assert s.sd == pytest.approx(np.std(values, ddof=1))
    assert (s.ci_low, s.ci_high) == pytest.approx((np.mean(values) - t * sem, np.mean(values) + t * sem))
    assert (s.min, s.max) == (0.9902, 0.9931)
    one = spread([0.99])
    assert one.sd is None and one.ci_low is None and one.mean == 0.99


def test_compare_gives_scipys_welch_test_and_a_plain_sentence() -> None:
    a, b = [0.9901, 0.9912, 0.9895, 0.9920], [0.9930, 0.9941, 0.9925, 0.9950, 0.9936]
    c = compare(a, b)
    welch = scipy_stats.ttest_ind(b, a, equal_var=False)
    assert c.p_value == pytest.approx(welch.pvalue)
    assert c.difference == pytest.approx(np.mean(b) - np.mean(a))
    assert c.ci_low < c.difference < c.ci_high and c.ci_low > 0
    assert sentence(c).startswith("B is higher than A by 0.")
    assert "unlikely to be seed noise" in sentence(c) and "4 and 5 seeds" in sentence(c)


def test_identical_sweeps_are_not_distinguishable() -> None:
    values = [0.99, 0.991, 0.9905]
    c = compare(values, values)
    assert c.difference == 0 and c.p_value == pytest.approx(1.0)
    assert "not distinguishable from seed noise" in sentence(c)
    constant = compare([0.99, 0.99], [0.99, 0.99])  # no spread at all: scipy's p is undefined
    assert constant.p_value == 1.0 and "not distinguishable" in sentence(constant)


def test_summary_round_trips_and_its_table_shows_each_seed_and_the_interval(tmp_path: Path) -> None:
    rows = [
        {"seed": s, "run_dir": f"seed_{s}", "test_acc": a, "test_loss": 0.03, "epochs_run": 1, "seconds": 10.0}
        for s, a in [(2, 0.992), (0, 0.99), (1, 0.991)]
    ]
    summary = build_summary(["fast.yaml"], ["--trainer.max_epochs=1"], [0, 1, 2], rows)
    assert [r["seed"] for r in summary["runs"]] == [0, 1, 2]
    assert summary["test_acc"]["mean"] == pytest.approx(0.991)
    write_summary(tmp_path, summary)
    assert read_summary(tmp_path) == read_summary(tmp_path / "summary.json") == json.loads(json.dumps(summary))
    table = format_table(summary)
    assert "99.10%" in table and "95% CI of the mean (Student t)" in table and len(table.splitlines()) == 5


def test_a_folder_without_a_summary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no summary\.json"):
        read_summary(tmp_path)
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(UserError, match="not a sweep summary"):
        read_summary(tmp_path)


def _space(tmp_path: Path, text: str, known=("model.init_args.lr", "data.batch_size"), refuse=None):
    path = tmp_path / "search.yaml"
    path.write_text(text)
    return load_search_space(path, lambda key: key in known, refuse or (lambda key, value: None))


def test_a_search_file_gives_floats_ints_and_choices_as_cli_options(tmp_path: Path) -> None:
    space = _space(
        tmp_path,
        "params:\n  model.init_args.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
        "  data.batch_size: {low: 16, high: 64, step: 16}\n  model.init_args.filters: {choices: [[8, 16], [16, 32]]}\n",
        known=("model.init_args.lr", "data.batch_size", "model.init_args.filters"),
    )
    study = optuna.create_study(direction=space.direction, sampler=space.make_sampler())
    values = space.suggest(study.ask())
    assert 1e-4 <= values["model.init_args.lr"] <= 1e-2
    assert values["data.batch_size"] in (16, 32, 48, 64) and values["model.init_args.filters"] in ([8, 16], [16, 32])
    args = cli_args(values)
    assert args[1] == f"--data.batch_size={values['data.batch_size']}" and args[2].startswith(
        "--model.init_args.filters=["
    )
    assert space.metric == "val/acc" and isinstance(space.make_sampler(), optuna.samplers.TPESampler)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("params:\n  model.init_args.lrr: {low: 0.1, high: 1}\n", "model.init_args.lrr is not a key"),
        ("params:\n  model.init_args.lr: {low: 1, high: 0.1}\n", "must be below high"),
        ("params:\n  model.init_args.lr: {low: 0, high: 0.1, log: true}\n", "needs low > 0"),
        ("params:\n  model.init_args.lr: {choices: []}\n", "non-empty list"),
        ("params:\n  model.init_args.lr: {min: 0, max: 1}\n", "params.model.init_args.lr"),
        ("params:\n  data.batch_size: {choices: [32, 0]}\n", "data.batch_size = 0 is refused"),
        ("sampler: {name: NoSuchSampler}\nparams:\n  data.batch_size: {choices: [32]}\n", "NoSuchSampler"),
        ("params: {}\n", "needs a `params:` mapping"),
        ("sampler: {name: GridSampler}\nparams:\n  data.batch_size: {choices: [32]}\n", "stops the study itself"),
        ("metrics: val/acc\nparams:\n  data.batch_size: {choices: [32]}\n", "unknown entries"),
    ],
)
def test_bad_search_files_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    refuse = lambda key, value: "must be > 0" if value == 0 else None  # noqa: E731
    with pytest.raises(SearchSpaceError, match=message):
        _space(tmp_path, text, refuse=refuse)


def test_trials_count_toward_the_total_unless_their_worker_died() -> None:
    study = optuna.create_study()
    for value in (1.0, 2.0):
        study.add_trial(optuna.trial.create_trial(value=value))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={FAIL_REASON: "boom"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))  # stale: run again elsewhere
    study.enqueue_trial({"x": 1.0})
    counts = tally(study.get_trials())
    assert (counts.finished, counts.running, counts.waiting, counts.replaced) == (4, 0, 1, 1)
    assert counts.claimed == 5


def test_the_seed_figure_marks_each_seed_the_mean_and_the_interval() -> None:
    values = [0.99, 0.992, 0.991]
    fig = seed_accuracies([0, 1, 2], values, spread(values), "fast.yaml")
    (ax,) = fig.axes
    assert ax.get_ylabel() == "test accuracy (%)" and [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
    labels = ax.get_legend_handles_labels()[1]
    assert "one seed" in labels and "mean 99.100%" in labels and "95% CI of the mean" in labels
