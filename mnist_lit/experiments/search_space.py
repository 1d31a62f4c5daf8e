"""The search file of ``tune``: config keys with their ranges or choices, the metric, and Optuna's sampler and pruner.

::

    metric: val/acc            # logged by the model on the validation split; maximized (direction: minimize)
    sampler: {name: TPESampler, args: {seed: 0}}    # any class of optuna.samplers; worker k of a study: seed + k
    pruner: {name: MedianPruner, args: {n_warmup_steps: 1}}  # any class of optuna.pruners
    params:
      model.init_args.lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # a float
      data.batch_size: {choices: [128, 256, 512]}                  # a choice (lists allowed: [[16, 32], [24, 32]])
      model.init_args.dense_units: {low: 64, high: 512, step: 64}  # integers when low, high (and step) are

The keys are checked against the configuration before anything runs (see :func:`load_search_space`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml

from mnist_lit.errors import UserError

SPEC_KEYS = {"low", "high", "log", "step", "choices"}
FILE_KEYS = {"metric", "direction", "sampler", "pruner", "params"}
#: Samplers that end the study themselves (``study.stop()``), which only works inside ``study.optimize``, while
#: ``tune``'s workers ask and tell; ``--trials`` ends a search instead.
STOPPING_SAMPLERS = {"GridSampler", "BruteForceSampler"}


class SearchSpaceError(UserError):
    """A search file that cannot be used: ``tune`` exits with status 2 on it, as for any bad option."""


@dataclass(frozen=True)
class Param:
    """One searched config key: a float or int range (``low``, ``high``, ``log``, ``step``) or ``choices``."""

    key: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step or 1))

    def suggest(self, trial: optuna.Trial) -> Any:
        """The trial's value for this key; non-scalar choices (lists) travel through Optuna as JSON text."""
        if self.choices is not None:
            encoded = [c if _scalar(c) else json.dumps(c) for c in self.choices]
            picked = trial.suggest_categorical(self.key, encoded)
            return picked if _scalar(self.choices[encoded.index(picked)]) else json.loads(picked)
        assert self.low is not None and self.high is not None  # parse_param makes a range have both
        if self.is_int:
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        step = None if self.step is None else float(self.step)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=step, log=self.log)

    def extremes(self) -> list[Any]:
        """The values that :func:`load_search_space` checks against the configuration."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search file."""

    params: tuple[Param, ...]
    metric: str = "val/acc"
    direction: Literal["maximize", "minimize"] = "maximize"
    sampler: Mapping[str, Any] = field(default_factory=dict)
    pruner: Mapping[str, Any] = field(default_factory=dict)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {p.key: p.suggest(trial) for p in self.params}

    def make_sampler(self, worker: int = 0) -> optuna.samplers.BaseSampler:
        """The search file's sampler as worker ``worker`` (0, 1, ... in the order they joined the study) uses it.

        Each worker of a study has a sampler of its own, so one seed for all would make every worker draw the same
        points. Worker k's seed is the file's seed plus k: worker 0 samples exactly as the search file says, and
        every other worker draws a stream of its own. ``QMCSampler`` keeps the one seed (its workers share one
        scrambled sequence, numbered in the study, as Optuna's documentation asks) and only its independent
        sampler, which draws the study's first points, gets seed + k. Without a seed, each sampler seeds itself.
        """
        spec = dict(self.sampler)
        args = dict(spec.get("args") or {})
        seed = args.get("seed")
        if worker and isinstance(seed, int) and not isinstance(seed, bool):
            if spec.get("name") == "QMCSampler":
                args.setdefault("independent_sampler", optuna.samplers.RandomSampler(seed=seed + worker))
            else:
                args["seed"] = seed + worker
        return _make(optuna.samplers, {**spec, "args": args}, "TPESampler", "sampler")

    def make_pruner(self) -> optuna.pruners.BasePruner:
        return _make(optuna.pruners, self.pruner, "MedianPruner", "pruner")


def cli_args(values: Mapping[str, Any]) -> list[str]:
    """``--key=value`` for each value, as the LightningCLI parses them (the values written as JSON, which is YAML)."""
    return [f"--{key}={json.dumps(value)}" for key, value in values.items()]


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _make(module: Any, spec: Mapping[str, Any], default: str, what: str) -> Any:
    name = spec.get("name", default)
    cls = getattr(module, str(name), None)
    if not isinstance(cls, type):
        raise SearchSpaceError(f"{what}: {name!r} is not a class of {module.__name__}.")
    try:
        return cls(**(spec.get("args") or {}))
    except (TypeError, ValueError) as err:
        raise SearchSpaceError(f"{what}: {name}({spec.get('args') or {}}) fails: {err}") from err


def parse_param(key: str, spec: Any) -> Param:
    """One entry of ``params``, its range checked (not yet against the configuration)."""
    where = f"params.{key}"
    if not isinstance(spec, Mapping) or not spec or set(spec) - SPEC_KEYS:
        raise SearchSpaceError(
            f"{where}: give {{low: , high: }} (with log: or step:) or {{choices: [...]}}; got {spec!r}."
        )
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise SearchSpaceError(f"{where}: choices must be a non-empty list, alone; got {spec!r}.")
        if len({json.dumps(c) for c in spec["choices"]}) != len(spec["choices"]):
            raise SearchSpaceError(f"{where}: a choice is listed twice.")
        return Param(key, choices=tuple(spec["choices"]))
    low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log", False)
    numbers = [v for v in (low, high, step) if v is not None]
    if low is None or high is None or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):
        raise SearchSpaceError(f"{where}: low and high must both be numbers; got {spec!r}.")
    if not isinstance(log, bool):
        raise SearchSpaceError(f"{where}: log must be true or false.")
    if not low < high:
        raise SearchSpaceError(f"{where}: low ({low}) must be below high ({high}).")
    if log and low <= 0:
        raise SearchSpaceError(f"{where}: a log range needs low > 0 (got {low}).")
    if step is not None and (step <= 0 or log):
        raise SearchSpaceError(f"{where}: step must be positive, and cannot go with log.")
    return Param(key, low=low, high=high, log=log, step=step)


def load_search_space(
    path: str | Path, exists: Callable[[str], bool], check: Callable[[str, Any], str | None]
) -> SearchSpace:
    """Read and check a search file: its shape, each range, each key against the configuration (``exists``), and
    the extremes of each range or every choice as values of that key (``check`` returns the parser's complaint, or
    None). Every problem is a :class:`SearchSpaceError` naming the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SearchSpaceError(f"--search {path}: cannot be read ({err}).") from err
    if not isinstance(raw, Mapping) or not isinstance(raw.get("params"), Mapping) or not raw["params"]:
        raise SearchSpaceError(f"--search {path}: needs a `params:` mapping of config keys to ranges or choices.")
    unknown = set(raw) - FILE_KEYS
    if unknown:
        raise SearchSpaceError(f"--search {path}: unknown entries {sorted(unknown)}; allowed: {sorted(FILE_KEYS)}.")
    params = []
    for key, spec in raw["params"].items():
        param = parse_param(str(key), spec)
        if not exists(param.key):
            raise SearchSpaceError(
                f"--search {path}: {param.key} is not a key of the configuration "
                "(see the keys with `python -m mnist_lit fit --config ... --print_config`)."
            )
        for value in param.extremes():
            problem = check(param.key, value)
            if problem:
                raise SearchSpaceError(
                    f"--search {path}: {param.key} = {value!r} is refused by the configuration: {problem}"
                )
        params.append(param)
    direction = raw.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise SearchSpaceError(f"--search {path}: direction must be maximize or minimize, not {direction!r}.")
    for what in ("sampler", "pruner"):
        if not isinstance(raw.get(what) or {}, Mapping) or set(raw.get(what) or {}) - {"name", "args"}:
            raise SearchSpaceError(f"--search {path}: {what} must be {{name: ClassName, args: {{...}}}}.")
    if (raw.get("sampler") or {}).get("name") in STOPPING_SAMPLERS:
        raise SearchSpaceError(
            f"--search {path}: {raw['sampler']['name']} stops the study itself, which tune does not support "
            "(its workers stop at --trials); use TPESampler, RandomSampler, QMCSampler, CmaEsSampler, ..."
        )
    space = SearchSpace(
        tuple(params), str(raw.get("metric", "val/acc")), direction, raw.get("sampler") or {}, raw.get("pruner") or {}
    )
    space.make_sampler(), space.make_pruner()  # fail now, not after the first trial
    return space
