"""research_plan.yaml: loading, validation and the resolved view every other module uses.

The plan is written by hand and read by people and by the pipeline, so validation happens in
one pass before any job starts and reports every problem at once, each with the file, the key
path, the line and what was expected. Free-form fields (status, outcome, note, ...) are kept as
information; an unknown key that is close to a known one is treated as a typo.

Handler code is never imported here: handler functions are found by parsing their files
(`labrunner.sources`), so validating a plan needs neither torch nor the handlers' dependencies.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from labrunner import grid as grids
from labrunner import layout, sources
from labrunner.errors import Issue, PlanError
from labrunner.jobcache import checked_by_job
from labrunner.jobspec import SubSpec, TrackingSettings
from labrunner.layout import DEFAULT_PLAN_PATH
from labrunner.yamlio import YamlList, as_written, line_of, load_yaml

__all__ = [
    "DEFAULT_PLAN_PATH",
    "Comparison",
    "Criterion",
    "Experiment",
    "Gate",
    "GateDecision",
    "Plan",
    "SubSpec",
    "load_plan",
    "load_plan_cached",
    "project_root_for",
]

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
BACKENDS = ("local", "modal")
WANDB_MODES = ("online", "offline", "disabled")

# Fields researchers already write that labrunner keeps as information and never trusts as state.
INFO_KEYS = frozenset(
    {"status", "outcome", "achieved", "note", "notes", "replaces", "future_study", "description",
     "rationale", "hypothesis", "conclusion", "results", "owner", "date", "tags", "priority",
     "references", "links", "summary", "question", "motivation", "risks", "comment", "comments"}
)
# Misspellings that difflib's ratio does not catch but people do write.
KEY_ALIASES = {
    "retry": "retries", "fail": "failure", "timeout": "timeout_min", "deps": "dependencies",
    "depends_on": "dependencies", "criteria": "success_criteria", "subs": "sub_experiments",
    "subexperiments": "sub_experiments", "gpu_type": "gpu", "stub": "stub_params",
    "mem": "mem_mb", "memory": "mem_mb", "memory_mb": "mem_mb",
}


class _Model(BaseModel):
    # extra="allow": free-form keys are kept as information; typos are caught before pydantic.
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    @property
    def info(self) -> dict[str, Any]:
        """The free-form fields a researcher wrote (status, note, outcome, ...)."""
        return dict(self.__pydantic_extra__ or {})


class _StrictModel(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ProjectInfo(_Model):
    name: str | None = None
    hypothesis: str | None = None


class RunSettings(_Model):
    """Settings that inherit plan defaults -> experiment -> sub; None means "inherit"."""

    backend: Literal["local", "modal"] | None = None
    gpu: str | None = None
    timeout_min: float | None = Field(None, gt=0)
    mem_mb: int | None = Field(None, gt=0)  # memory of the job (SLURM --mem), in MB
    retries: int | None = Field(None, ge=0, le=20)
    seeds: list[int] | None = Field(None, min_length=1)
    seed: int | None = None

    @model_validator(mode="after")
    def _one_seed_spelling(self) -> "RunSettings":
        if self.seed is not None and self.seeds is not None:
            raise ValueError("give either seed or seeds, not both")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        return self

    def seed_list(self) -> list[int] | None:
        return [self.seed] if self.seed is not None else self.seeds


class Defaults(RunSettings):
    model_config = ConfigDict(extra="forbid", frozen=True)
    borderline_pct: float = Field(5.0, ge=0, le=100)
    modal_secret: str | None = None
    # USD per GPU-hour by GPU type, for the cost estimates in the write-up (labrunner.compute):
    # any backend's runs of that type; for Modal runs it overrides Modal's published rates
    gpu_price_per_hour: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(default_factory=dict)


class WandbSettings(_StrictModel):
    project: str | None = None
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] = "offline"
    init_timeout_s: float = Field(60.0, gt=0)
    finish_timeout_s: float = Field(60.0, gt=0)
    tags: list[str] = Field(default_factory=list)


_THRESHOLD = re.compile(r"^\s*(>=|<=|>|<|=)?\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$")


def _parse_threshold(value: Any) -> tuple[Any, str | None]:
    """Accept 0.95 and also strings people write: ">= 0.95", "<0.3" (the comparator hints direction)."""
    if isinstance(value, str):
        match = _THRESHOLD.match(value)
        if match:
            op = match.group(1)
            hint = "higher" if op in (">=", ">") else "lower" if op in ("<=", "<") else None
            return float(match.group(2)), hint
    return value, None


class Comparison(_StrictModel):
    """`compare: {treatment: e1_2, baseline: e1_1}`: the criterion judges treatment minus baseline."""

    treatment: str
    baseline: str


class Criterion(_Model):
    """Tiered success criterion for one metric, or (with `compare`) for a difference between two subs."""

    target: float | None = None
    acceptable: float | None = None
    failure: float | None = None
    direction: Literal["higher", "lower"] | None = None
    from_sub: str | None = Field(None, alias="from")
    borderline_pct: float | None = Field(None, ge=0, le=100)
    # the values the metric can take, [low, high] with null for unbounded: intervals are clipped to it
    value_range: tuple[float | None, float | None] | None = Field(None, alias="range")
    compare: Comparison | None = None
    metric: str | None = None  # with compare: the metric both subs report
    paired_by: Literal["seed"] | None = None  # with compare: pair the runs by seed (else Welch)

    @field_validator("value_range", mode="before")
    @classmethod
    def _range_shape(cls, value: Any) -> Any:
        def number_or_null(item: Any) -> bool:
            return item is None or (isinstance(item, (int, float)) and not isinstance(item, bool) and item == item)

        if value is None:
            return value
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(number_or_null(v) for v in value):
            raise ValueError(f"expected [low, high] with numbers or null, e.g. [0, null]; got {value!r}")
        low, high = value
        if low is not None and high is not None and low >= high:
            raise ValueError(f"expected low < high, got [{low}, {high}]")
        return value

    @model_validator(mode="before")
    @classmethod
    def _comparator_strings(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        hints = set()
        for tier in ("target", "acceptable", "failure"):
            if tier in data:
                data[tier], hint = _parse_threshold(data[tier])
                if hint and tier != "failure":
                    hints.add(hint)
        if data.get("direction") is None and len(hints) == 1:
            data["direction"] = hints.pop()
        return data

    @field_validator("target", "acceptable", "failure")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and value != value:
            raise ValueError("threshold must be a number, got NaN")
        return value

    def resolved(self, **changes: Any) -> "Criterion":
        """This criterion with its direction filled in (written or inferred), as verdicts need it."""
        return self.model_copy(update={"direction": resolved_direction(self), **changes})

    def tiers(self) -> list[tuple[str, float]]:
        return [(name, value) for name, value in
                (("target", self.target), ("acceptable", self.acceptable), ("failure", self.failure))
                if value is not None]


class SubSettings(RunSettings):
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    stub_params: dict[str, Any] = Field(default_factory=dict)
    handler: str | None = None
    skip: str | bool | None = None
    grid: dict[str, list[Any]] | None = None  # a sweep: one sub per combination (see labrunner.grid)

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, value: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("expected at least one parameter with a list of values, e.g. {lr: [0.001, 0.01]}")
        for key, values in value.items():
            if not values:
                raise ValueError(f"{key}: expected at least one value")
            repeated = [item for index, item in enumerate(values) if item in values[:index]]
            if repeated:
                raise ValueError(f"{key}: values must be distinct, {repeated[0]!r} appears twice")
        return value


class Experiment(RunSettings):
    name: str | None = None
    type: Literal["claim", "question", "pivot"] | None = None
    phase: int | str | None = None
    handlers: str | None = None
    dependencies: list[str] = Field(default_factory=list)
    requires: list[str] = Field(default_factory=list)  # gates that must pass before its subs run
    success_criteria: dict[str, Criterion] = Field(default_factory=dict)
    sub_experiments: dict[str, SubSettings] = Field(default_factory=dict)
    archived: bool = False
    params: dict[str, Any] = Field(default_factory=dict)
    stub_params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("dependencies", "requires", mode="before")
    @classmethod
    def _single_dependency(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else ([] if value is None else as_written(value))

    @field_validator("sub_experiments", mode="before")
    @classmethod
    def _list_form(cls, value: Any) -> Any:
        """Researchers write `sub_experiments: [e1_1, e1_2]`; a mapping carries settings."""
        if value is None:
            return {}
        if isinstance(value, list):
            subs: dict[Any, Any] = {}
            for item in as_written(value):  # `[1.10, 1.1]`: two subs, named as written
                if isinstance(item, Mapping) and len(item) == 1:
                    subs.update(item)
                else:
                    subs[item] = None
            value = subs
        if isinstance(value, Mapping):
            # ids are names: `[1, 2]` means subs "1" and "2", as numeric experiment ids do
            return {str(key): ({} if settings is None else settings) for key, settings in value.items()}
        return value


GATE_VERDICTS = ("proceed", "pivot", "stop")


class GateDecision(_StrictModel):
    """A person's recorded decision at a gate. `proceed` opens the gate whatever the computed
    status says (the disagreement is flagged); `pivot` and `stop` keep it closed."""

    verdict: Literal["proceed", "pivot", "stop"]
    by: str | None = None
    date: str | None = None
    note: str | None = None

    @field_validator("date", mode="before")
    @classmethod
    def _date_text(cls, value: Any) -> Any:
        return value.isoformat() if hasattr(value, "isoformat") else value


class Gate(_Model):
    name: str | None = None
    experiments: list[str] = Field(min_length=1)
    unlocks: str | None = None
    decision: GateDecision | None = None

    @field_validator("experiments", mode="before")
    @classmethod
    def _ids_as_written(cls, value: Any) -> Any:
        return as_written(value)


class PlanModel(_Model):
    project: ProjectInfo = Field(default_factory=ProjectInfo)
    defaults: Defaults = Field(default_factory=Defaults)
    wandb: WandbSettings = Field(default_factory=WandbSettings)
    experiments: dict[str, Experiment] = Field(min_length=1)
    gates: dict[str, Gate] = Field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """A validated plan. `root` is the project folder that relative paths start from."""

    path: Path
    root: Path
    model: PlanModel
    subs_by_experiment: Mapping[str, tuple[SubSpec, ...]]

    @property
    def experiments(self) -> dict[str, Experiment]:
        return self.model.experiments

    @property
    def active_experiments(self) -> list[str]:
        return [exp_id for exp_id, exp in self.model.experiments.items() if not exp.archived]

    @property
    def gates(self) -> dict[str, Gate]:
        return self.model.gates

    @property
    def tracking(self) -> TrackingSettings:
        """The W&B settings a job's runs are started with (see labrunner.jobspec)."""
        return TrackingSettings.from_plan(self.model.wandb, self.model.project.name)

    def subs(self, experiment_id: str | None = None, include_skipped: bool = False) -> Iterator[SubSpec]:
        """Sub-experiments of active experiments (or of one experiment), in plan order."""
        ids = [experiment_id] if experiment_id is not None else self.active_experiments
        for exp_id in ids:
            for spec in self.subs_by_experiment[exp_id]:
                if include_skipped or spec.skip_reason is None:
                    yield spec

    def sweeps(self, experiment_id: str) -> dict[str, tuple[SubSpec, ...]]:
        """The combinations of each swept sub of an experiment, by the sub id that has the grid."""
        sweeps: dict[str, list[SubSpec]] = {}
        for spec in self.subs(experiment_id):
            if spec.sweep is not None:
                sweeps.setdefault(spec.sweep, []).append(spec)
        return {sweep: tuple(specs) for sweep, specs in sweeps.items()}

    def sub(self, experiment_id: str, sub_id: str) -> SubSpec:
        """Look one sub up; an unknown name is an error listing the valid ones."""
        if experiment_id not in self.subs_by_experiment:
            raise PlanError.single(self.path, "experiments", _unknown("experiment", experiment_id, self.subs_by_experiment))
        for spec in self.subs_by_experiment[experiment_id]:
            if spec.sub_id == sub_id:
                return spec
        valid = [spec.sub_id for spec in self.subs_by_experiment[experiment_id]]
        raise PlanError.single(self.path, f"experiments.{experiment_id}.sub_experiments", _unknown("sub-experiment", sub_id, valid))


def _unknown(kind: str, name: str, valid: Any) -> str:
    valid = list(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (valid: {', '.join(valid) or 'none'})"


def project_root_for(plan_path: Path) -> Path:
    """The project folder a plan's relative paths (handlers, results) start from: the nearest
    folder above the plan that holds a Snakefile, so that `plans/v2.yaml` works as well as
    `research/research_plan.yaml`; without one, the folder above `research/`, else the plan's own."""
    parent = plan_path.resolve().parent
    for folder in (parent, *parent.parents):
        if (folder / "Snakefile").is_file():
            return folder
    return parent.parent if parent.name == "research" else parent


def load_plan(path: Path | str = DEFAULT_PLAN_PATH, *, root: Path | None = None,
              check_handlers: bool | tuple[str, str] = True) -> Plan:
    """Load and validate a plan; raise PlanError listing every problem found.

    `check_handlers` may name one (experiment, sub) to check only its handler: a job running
    one sub should not parse a thousand handler files.
    """
    path = Path(path)
    shown = str(path)
    raw = load_yaml(path, PlanError)
    if not isinstance(raw, Mapping):
        got = "an empty file" if raw is None else "a list" if isinstance(raw, list) else f"a {type(raw).__name__}"
        raise PlanError.single(shown, "", f"expected a mapping with an 'experiments' key at the top level, got {got}")
    issues = list(_key_typos(raw, shown))
    model, schema_issues, all_ids = _validate_parts(raw, shown)
    issues.extend(schema_issues)
    root = Path(root) if root is not None else project_root_for(path)
    subs_by_experiment, semantic = _resolve(model, raw, shown, root, check_handlers, all_ids)
    issues.extend(semantic)
    if issues:
        raise PlanError(_sorted(issues))
    return Plan(path=path, root=root, model=model, subs_by_experiment=subs_by_experiment)


# (plan file, root, inode, mtime_ns, size) -> (the plan, whether its handler files were checked):
# in Snakemake's process the parse-time load, every aggregate job and the end of the run read the
# same plan, and validating 1,000 subs takes a fifth of a second
_PLAN_CACHE: dict[tuple[str, str, int, int, int], tuple[Plan, bool]] = {}


def load_plan_cached(path: Path | str, root: Path, check_handlers: bool = False) -> Plan:
    """`load_plan(path, root=root, check_handlers=...)`, validated once while the file stays as it
    is (an edit is read again: the file is looked at before it is read, so a plan edited while it
    was being read is filed under the old look). A plan whose handler files were checked also
    serves a caller that does not check them. The Plan is shared: callers must not change it."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), str(Path(root).resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size)
    cached = _PLAN_CACHE.get(key)
    if cached is None or (check_handlers and not cached[1]):
        plan = load_plan(path, root=root, check_handlers=check_handlers)
        if len(_PLAN_CACHE) >= 8:  # earlier versions of the file, or other roots
            _PLAN_CACHE.clear()
        _PLAN_CACHE[key] = cached = (plan, check_handlers)
    return cached[0]


_NESTED = ("sub_experiments", "success_criteria")


def _salvage(model: type[BaseModel], data: Any, exc: ValidationError) -> Any:
    """The part without the entries that failed (reported already), so that the checks across
    the plan still run on the rest: one typo must not hide a missing handler file elsewhere."""
    if model is not Experiment or not isinstance(data, Mapping):
        return None
    cleaned: dict[Any, Any] = dict(data)
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if not loc:
            return None
        if loc[0] in _NESTED and len(loc) > 1 and isinstance(cleaned.get(loc[0]), Mapping):
            cleaned[loc[0]] = {key: value for key, value in cleaned[loc[0]].items() if str(key) != str(loc[1])}
        else:
            cleaned.pop(loc[0], None)
    try:
        return model.model_validate(cleaned)
    except ValidationError:
        return None


def _validate_parts(raw: Mapping[str, Any], shown: str) -> tuple[PlanModel, list[Issue], list[str]]:
    """Validate each block and each experiment on its own, so one bad experiment does not hide
    the problems of the others; the model keeps the parts that validated."""
    issues: list[Issue] = []

    def part(model: type[BaseModel], data: Any, loc: tuple[Any, ...]) -> Any:
        try:
            return model.model_validate({} if data is None and loc[0] != "experiments" else data)
        except ValidationError as exc:
            issues.extend(_pydantic_issues(exc, raw, shown, loc))
            return _salvage(model, data, exc)

    blocks = {name: part(cls, raw.get(name), (name,))
              for name, cls in (("project", ProjectInfo), ("defaults", Defaults), ("wandb", WandbSettings))}
    experiments_raw = raw.get("experiments")
    experiments: dict[str, Experiment] = {}
    all_ids: list[str] = []
    if not isinstance(experiments_raw, Mapping) or not experiments_raw:
        got = "nothing" if experiments_raw is None else repr(experiments_raw) if not isinstance(experiments_raw, Mapping) else "an empty mapping"
        issues.append(Issue(shown, "experiments", f"expected a mapping of experiment id -> experiment, got {got}",
                            line_of(raw, ("experiments",))))
    else:
        for exp_id, exp_raw in experiments_raw.items():
            all_ids.append(str(exp_id))
            exp = part(Experiment, exp_raw, ("experiments", exp_id))
            if exp is not None:
                experiments[str(exp_id)] = exp
    gates: dict[str, Gate] = {}
    gates_raw = raw.get("gates") or {}
    if not isinstance(gates_raw, Mapping):
        issues.append(Issue(shown, "gates", f"expected a mapping of gate id -> gate, got {gates_raw!r}", line_of(raw, ("gates",))))
    else:
        for gate_id, gate_raw in gates_raw.items():
            gate = part(Gate, gate_raw, ("gates", gate_id))
            if gate is not None:
                gates[str(gate_id)] = gate
    extra = {key: value for key, value in raw.items() if key not in PlanModel.model_fields}
    model = PlanModel.model_construct(
        project=blocks["project"] or ProjectInfo(), defaults=blocks["defaults"] or Defaults(),
        wandb=blocks["wandb"] or WandbSettings(), experiments=experiments, gates=gates, **extra,
    )
    return model, issues, all_ids


def _sorted(issues: list[Issue]) -> list[Issue]:
    return sorted(issues, key=lambda issue: (issue.line or 0, issue.key))


# --- typo detection ----------------------------------------------------------------------------

def _known_keys(model: type[BaseModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


_SCHEMA: dict[str, tuple[type[BaseModel], bool]] = {
    # block -> (model, strict: every unknown key is an error)
    "plan": (PlanModel, False), "project": (ProjectInfo, False), "defaults": (Defaults, True),
    "wandb": (WandbSettings, True), "experiment": (Experiment, False), "sub": (SubSettings, False),
    "criterion": (Criterion, False), "gate": (Gate, False), "decision": (GateDecision, True),
    "comparison": (Comparison, True),
}


def _check_block(block: Any, kind: str, key_path: str, raw: Any, path_tuple: tuple[Any, ...], shown: str) -> Iterator[Issue]:
    if not isinstance(block, Mapping):
        return
    model, strict = _SCHEMA[kind]
    known = _known_keys(model)
    for key in block:
        if not isinstance(key, str) or key in known or (not strict and key in INFO_KEYS):
            continue
        suggestion = KEY_ALIASES.get(key.lower())
        if suggestion not in known:
            lowered = {k.lower(): k for k in known}
            suggestion = lowered.get(key.lower()) or next(iter(difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)), None)
        if suggestion is None and not strict:
            continue  # a free-form field the researcher added: kept as information
        where = f"{key_path}.{key}" if key_path else key
        hint = f"did you mean {suggestion!r}?" if suggestion else f"expected one of: {', '.join(sorted(known))}"
        yield Issue(shown, where, f"unknown key; {hint}", line_of(raw, (*path_tuple, key)))


def _key_typos(raw: Mapping[str, Any], shown: str) -> Iterator[Issue]:
    yield from _check_block(raw, "plan", "", raw, (), shown)
    for block in ("project", "defaults", "wandb"):
        yield from _check_block(raw.get(block), block, block, raw, (block,), shown)
    experiments = raw.get("experiments")
    if isinstance(experiments, Mapping):
        for exp_id, exp in experiments.items():
            base = ("experiments", exp_id)
            yield from _check_block(exp, "experiment", f"experiments.{exp_id}", raw, base, shown)
            if not isinstance(exp, Mapping):
                continue
            criteria = exp.get("success_criteria")
            if isinstance(criteria, Mapping):
                for metric, crit in criteria.items():
                    yield from _check_block(crit, "criterion", f"experiments.{exp_id}.success_criteria.{metric}",
                                            raw, (*base, "success_criteria", metric), shown)
                    if isinstance(crit, Mapping):
                        yield from _check_block(crit.get("compare"), "comparison",
                                                f"experiments.{exp_id}.success_criteria.{metric}.compare",
                                                raw, (*base, "success_criteria", metric, "compare"), shown)
            subs = exp.get("sub_experiments")
            yield from _repeated_list_ids(subs, f"experiments.{exp_id}.sub_experiments", shown)
            if isinstance(subs, Mapping):
                for sub_id, settings in subs.items():
                    yield from _check_block(settings, "sub", f"experiments.{exp_id}.sub_experiments.{sub_id}",
                                            raw, (*base, "sub_experiments", sub_id), shown)
    gates = raw.get("gates")
    if isinstance(gates, Mapping):
        for gate_id, gate in gates.items():
            yield from _check_block(gate, "gate", f"gates.{gate_id}", raw, ("gates", gate_id), shown)
            if isinstance(gate, Mapping):
                yield from _check_block(gate.get("decision"), "decision", f"gates.{gate_id}.decision", raw,
                                        ("gates", gate_id, "decision"), shown)


def _repeated_list_ids(subs: Any, key: str, shown: str) -> Iterator[Issue]:
    """`sub_experiments: [a, b, a]`: the second `a` would silently merge into the first."""
    if not isinstance(subs, YamlList):
        return
    first_line: dict[str, int] = {}
    for item, line in zip(as_written(subs), subs.item_lines):
        names = list(item) if isinstance(item, Mapping) and len(item) == 1 else [item]
        for name in map(str, names):
            if name in first_line:
                yield Issue(shown, f"{key}.{name}", f"listed twice (first on line {first_line[name]}); "
                            "each sub-experiment needs its own id", line)
            first_line.setdefault(name, line)


# --- pydantic errors as plain messages ----------------------------------------------------------

def _pydantic_issues(exc: ValidationError, raw: Any, shown: str, prefix: tuple[Any, ...]) -> Iterator[Issue]:
    seen: set[tuple[str, str]] = set()
    for error in exc.errors(include_url=False):
        loc = prefix + tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            continue  # reported with a suggestion by _key_typos
        key = ".".join(str(part) for part in loc)
        message = _plain_message(error)
        if (key, message) in seen:
            continue
        seen.add((key, message))
        yield Issue(shown, key, message, line_of(raw, loc))


def _plain_message(error: Mapping[str, Any]) -> str:
    msg: str = error["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    msg = msg.replace("Input should be", "expected").replace("Dictionary", "a mapping")
    if error["type"] == "missing":
        return "required key is missing"
    if error["type"] == "too_short":
        minimum = (error.get("ctx") or {}).get("min_length", 1)
        return f"expected at least {minimum} item{'s' if minimum != 1 else ''}, got {len(error.get('input') or [])}"
    got = error.get("input")
    if error["type"] in ("model_type", "dict_type", "model_attributes_type"):
        msg = "expected a mapping"
    if not isinstance(got, (Mapping, list)) and error["type"] not in ("value_error", "assertion_error"):
        msg += f", got {got!r}"
    elif isinstance(got, (Mapping, list)) and error["type"] not in ("value_error", "too_short"):
        msg += f", got a {'mapping' if isinstance(got, Mapping) else 'list'}"
    return msg


# --- semantic checks and resolution -------------------------------------------------------------

def _resolve(model: PlanModel, raw: Any, shown: str, root: Path, check_handlers: bool | tuple[str, str],
             all_ids: list[str]) -> tuple[dict[str, tuple[SubSpec, ...]], list[Issue]]:
    issues: list[Issue] = []

    def issue(loc: tuple[Any, ...], message: str) -> None:
        issues.append(Issue(shown, ".".join(str(p) for p in loc), message, line_of(raw, loc)))

    experiments = model.experiments
    for gate_id, gate in model.gates.items():
        if not ID_PATTERN.match(gate_id):
            issue(("gates", gate_id), _bad_id("gate id", gate_id))
        for index, exp_id in enumerate(gate.experiments):
            if exp_id not in all_ids:
                issue(("gates", gate_id, "experiments", index), _unknown("experiment", exp_id, all_ids))
    subs_by_experiment: dict[str, tuple[SubSpec, ...]] = {}
    for exp_id, exp in experiments.items():
        base = ("experiments", exp_id)
        problem = _id_problem("experiment id", exp_id)
        if problem:
            issue(base, problem)
            continue
        for index, dep in enumerate(exp.dependencies):
            if dep not in all_ids:
                issue((*base, "dependencies", index), _unknown("experiment", dep, [e for e in all_ids if e != exp_id]))
            elif dep == exp_id:
                issue((*base, "dependencies", index), "an experiment cannot depend on itself")
        for metric, crit in exp.success_criteria.items():
            issues.extend(_criterion_issues(crit, (*base, "success_criteria", metric), exp, raw, shown))
        if not exp.sub_experiments and not exp.archived:
            issue(base, "has no sub_experiments; list at least one (or set archived: true)")
        specs = []
        for sub_id, settings in exp.sub_experiments.items():
            sub_loc = (*base, "sub_experiments", sub_id)
            problem = _id_problem("sub-experiment id", str(sub_id))
            if problem:
                issue(sub_loc, problem)
                continue
            check = check_handlers is True or _names_run_of(check_handlers, exp_id, sub_id)
            spec, problems = _sub_spec(model, exp_id, exp, sub_id, settings, root, check and not exp.archived)
            for message in problems:
                handler_loc = (*sub_loc, "handler") if settings.handler else sub_loc
                issue(handler_loc, message)
            if settings.grid is not None and spec.skip_reason is None:
                combinations, grid_issues = _sweep_specs(spec, settings, sub_loc)
                specs.extend(combinations)
                for loc, message in grid_issues:
                    issue(loc, message)
            else:
                specs.append(spec)
        for loc, message in _duplicate_id_issues(specs, base):
            issue(loc, message)
        for metric, crit in exp.success_criteria.items():
            for loc, message in _criterion_reference_issues(crit, (*base, "success_criteria", metric), specs):
                issue(loc, message)
        subs_by_experiment[exp_id] = tuple(specs)
    issues.extend(_reference_issues(model, raw, shown, subs_by_experiment))
    issues.extend(_cycle_issues(model, raw, shown))
    issues.extend(_memory_issues(model, subs_by_experiment, raw, shown))
    return subs_by_experiment, issues


def _reference_issues(model: PlanModel, raw: Any, shown: str,
                      subs_by_experiment: Mapping[str, tuple[SubSpec, ...]]) -> Iterator[Issue]:
    """References that name something that can never complete: an archived experiment in a gate
    or a dependency, an experiment whose every sub is skipped, a criterion `from:` a skipped sub,
    an unknown gate in `requires`. Each would otherwise leave something pending for ever."""

    def at(loc: tuple[Any, ...], message: str) -> Issue:
        return Issue(shown, ".".join(str(p) for p in loc), message, line_of(raw, loc))

    experiments = model.experiments
    gates_raw = raw.get("gates") if isinstance(raw, Mapping) else None
    written_gates = [str(key) for key in gates_raw] if isinstance(gates_raw, Mapping) else []

    def never_completes(exp_id: str) -> str | None:
        exp = experiments.get(exp_id)
        if exp is None:
            return None  # unknown ids are reported elsewhere
        if exp.archived:
            return f"{exp_id} is archived (it never runs)"
        specs = subs_by_experiment.get(exp_id, ())
        if specs and all(spec.skip_reason is not None for spec in specs):
            return f"every sub-experiment of {exp_id} is skipped (it never produces a result)"
        return None

    for gate_id, gate in model.gates.items():
        for index, exp_id in enumerate(gate.experiments):
            why = never_completes(exp_id)
            if why:
                yield at(("gates", gate_id, "experiments", index),
                         f"{why}, so this gate could never pass; remove it from the gate or let it run")
    for exp_id, exp in experiments.items():
        if exp.archived:
            continue
        base = ("experiments", exp_id)
        for index, dep in enumerate(exp.dependencies):
            why = never_completes(dep) if dep != exp_id else None
            if why:
                yield at((*base, "dependencies", index), f"{why}, so {exp_id} cannot build on it; "
                         "remove the dependency or let it run")
        for index, gate_id in enumerate(exp.requires):
            gate = model.gates.get(gate_id)
            if gate is None:
                if gate_id not in written_gates:  # one that is written but invalid is reported already
                    yield at((*base, "requires", index), _unknown("gate", gate_id, written_gates))
            elif exp_id in gate.experiments:
                yield at((*base, "requires", index), f"{exp_id} requires {gate_id}, which waits for {exp_id} itself")
        skipped = {spec.sub_id: spec.skip_reason for spec in subs_by_experiment.get(exp_id, ()) if spec.skip_reason}
        for metric, crit in exp.success_criteria.items():
            if crit.from_sub in skipped:
                yield at((*base, "success_criteria", metric, "from"),
                         f"sub-experiment {crit.from_sub!r} is skipped ({skipped[crit.from_sub]}), so {metric} "
                         "could never be measured; name a sub that runs, or drop `from:`")


def _memory_issues(model: PlanModel, subs_by_experiment: Mapping[str, tuple[SubSpec, ...]], raw: Any,
                   shown: str) -> Iterator[Issue]:
    """mem_mb for some subs means mem_mb for all: a job without one would get Snakemake's default
    (1000 MB, too little for most ML jobs), which a resource set per job cannot fall back to."""
    specs = [spec for specs in subs_by_experiment.values() for spec in specs
             if spec.skip_reason is None and not model.experiments[spec.experiment_id].archived]
    without = [spec.key for spec in specs if spec.mem_mb is None]
    if not without or len(without) == len(specs):
        return
    given = next(spec.key for spec in specs if spec.mem_mb is not None)
    listed = ", ".join(without[:5]) + (f" and {len(without) - 5} more" if len(without) > 5 else "")
    yield Issue(shown, "defaults.mem_mb", f"missing: {given} has a mem_mb, so every sub needs one; "
                f"set defaults.mem_mb (MB of memory per job) for the others ({listed})", line_of(raw, ("defaults",)))


def _bad_id(kind: str, value: str) -> str:
    return f"{kind} {value!r} is not path-safe: expected letters, digits, '.', '_' or '-', starting with a letter or digit"


def _id_problem(kind: str, value: str) -> str | None:
    """Why an experiment or sub id cannot name its folder in the results tree, or None."""
    if not ID_PATTERN.match(value):
        return _bad_id(kind, value)
    problem = layout.reserved_name_problem(value)
    shown = value if len(value) <= 60 else value[:40] + "..."
    return f"{kind} {shown!r} {problem}" if problem else None


def _criterion_issues(crit: Criterion, loc: tuple[Any, ...], exp: Experiment, raw: Any, shown: str) -> Iterator[Issue]:
    key = ".".join(str(p) for p in loc)
    line = line_of(raw, loc)
    tiers = crit.tiers()
    if not tiers:
        yield Issue(shown, key, "expected at least one of target, acceptable, failure", line)
        return
    direction = crit.direction or _infer_direction(tiers)
    if direction is None:
        yield Issue(shown, key, "direction is missing and cannot be inferred from the tiers; add direction: higher or lower", line)
    else:
        values = [value for _, value in tiers]
        ordered = values == sorted(values, reverse=(direction == "higher"))
        if not ordered:
            described = ", ".join(f"{name} {value:g}" for name, value in tiers)
            want = "target >= acceptable >= failure" if direction == "higher" else "target <= acceptable <= failure"
            yield Issue(shown, key, f"tiers are in the wrong order for direction {direction}: {described}; expected {want}", line)
    yield from (Issue(shown, ".".join(str(p) for p in where), message, line_of(raw, where))
                for where, message in _comparison_shape_issues(crit, loc))


Located = tuple[tuple[Any, ...], str]  # (key path, message): an issue before file and line are added


def _comparison_shape_issues(crit: Criterion, loc: tuple[Any, ...]) -> Iterator[Located]:
    """What a criterion's own keys say: compare needs metric, metric needs compare, tiers in range."""
    if crit.compare is not None:
        if not crit.metric:
            yield loc, "compare needs metric: the metric that both sub-experiments report, e.g. metric: accuracy"
        if crit.from_sub is not None:
            yield (*loc, "from"), "a comparison takes its values from compare's treatment and baseline; remove from"
    else:
        for key in ("metric", "paired_by"):
            if getattr(crit, key) is not None:
                yield (*loc, key), f"{key} belongs to a comparison; add compare: {{treatment: <sub>, baseline: <sub>}}"
    if crit.value_range is not None:
        low, high = crit.value_range
        for name, value in crit.tiers():
            if (low is not None and value < low) or (high is not None and value > high):
                shown = f"[{'null' if low is None else f'{low:g}'}, {'null' if high is None else f'{high:g}'}]"
                yield (*loc, "range"), f"{name} {value:g} lies outside the range {shown} the metric can take"


def _criterion_reference_issues(crit: Criterion, loc: tuple[Any, ...], specs: list[SubSpec]) -> Iterator[Located]:
    """Names of subs in a criterion (from, compare) against the resolved subs, sweeps included."""
    by_id = {spec.sub_id: spec for spec in specs}
    sweeps: dict[str, list[str]] = {}
    for spec in specs:
        if spec.sweep is not None:
            sweeps.setdefault(spec.sweep, []).append(spec.sub_id)
    valid = [*by_id, *sweeps]
    if crit.from_sub is not None and crit.from_sub not in by_id and crit.from_sub not in sweeps:
        yield (*loc, "from"), _unknown("sub-experiment", crit.from_sub, valid)
    if crit.compare is None:
        return
    for role in ("treatment", "baseline"):
        name = getattr(crit.compare, role)
        where = (*loc, "compare", role)
        if name in sweeps:
            yield where, f"{name} is a sweep of {len(sweeps[name])} combinations; name one: {', '.join(sweeps[name])}"
        elif name not in by_id:
            yield where, _unknown("sub-experiment", name, by_id)
        elif by_id[name].skip_reason is not None:
            yield where, f"{name} is skipped ({by_id[name].skip_reason}); a comparison needs its results"
    treatment, baseline = by_id.get(crit.compare.treatment), by_id.get(crit.compare.baseline)
    if crit.compare.treatment == crit.compare.baseline:
        yield (*loc, "compare"), f"treatment and baseline are both {crit.compare.treatment}; compare two different subs"
    elif crit.paired_by == "seed" and treatment and baseline and set(treatment.seeds) != set(baseline.seeds):
        yield (*loc, "paired_by"), (
            f"seeds do not pair: {treatment.sub_id} runs seeds {list(treatment.seeds)}, {baseline.sub_id} runs "
            f"{list(baseline.seeds)}; give both the same seeds, or remove paired_by for an unpaired (Welch) comparison")


def _names_run_of(check_handlers: bool | tuple[str, str], exp_id: str, sub_id: str) -> bool:
    """Whether a job for (experiment, sub) runs this sub, or one combination of its sweep."""
    if not isinstance(check_handlers, tuple) or check_handlers[0] != exp_id:
        return False
    return checked_by_job(check_handlers[1], sub_id)  # the job cache checks the same handlers


def _sweep_specs(spec: SubSpec, settings: SubSettings, loc: tuple[Any, ...]) -> tuple[list[SubSpec], list[Located]]:
    """One spec per combination of the sub's grid (ids: see labrunner.grid), and what is wrong with it."""
    grid = settings.grid or {}
    issues: list[Located] = []
    for key in grid:
        if key in settings.params:
            issues.append(((*loc, "grid", key), f"{key} is in both params and grid; keep it in one of them"))
    specs, seen = [], {}
    for combination_id, combination in grids.expand(spec.sub_id, grid):
        if combination_id in seen:
            issues.append(((*loc, "grid"), f"the combinations {seen[combination_id]} and {combination} both get the "
                                           f"id {combination_id!r}; make their values differ in letters or digits"))
            continue
        seen[combination_id] = combination
        problem = _id_problem("the combination id", combination_id)  # too long, in practice
        if problem:
            issues.append(((*loc, "grid"), problem))
            break
        label = ", ".join(f"{key}={value}" for key, value in combination.items())
        specs.append(dataclasses.replace(spec, sub_id=combination_id, name=f"{spec.name} ({label})",
                                         params={**spec.params, **combination}, sweep=spec.sub_id, swept=combination))
    return specs, issues


def _duplicate_id_issues(specs: list[SubSpec], base: tuple[Any, ...]) -> Iterator[Located]:
    """A combination id that is also the id of another sub (or of another sweep's combination)."""
    seen: dict[str, SubSpec] = {}
    for spec in specs:
        other = seen.get(spec.sub_id)
        if other is not None:
            owner = spec.sweep or other.sweep or spec.sub_id
            yield (*base, "sub_experiments", owner), (
                f"the sweep's combination id {spec.sub_id!r} is also the id of another sub-experiment; rename one")
        seen[spec.sub_id] = spec


def _infer_direction(tiers: list[tuple[str, float]]) -> str | None:
    values = [value for _, value in tiers]
    if len(set(values)) < 2:
        return None
    return "higher" if values[0] > values[-1] else "lower"


def resolved_direction(crit: Criterion) -> str:
    """The criterion's direction, written or inferred (validation guarantees one exists)."""
    direction = crit.direction or _infer_direction(crit.tiers())
    assert direction is not None, "validated plans always have a direction"
    return direction


def handlers_dir_of(exp_id: str, exp: Experiment) -> Path:
    """The folder of an experiment's handler files, relative to the project root."""
    return Path(exp.handlers) if exp.handlers else Path("handlers") / exp_id


def _sub_spec(model: PlanModel, exp_id: str, exp: Experiment, sub_id: str, sub: SubSettings,
              root: Path, check_handler: bool) -> tuple[SubSpec, list[str]]:
    layers = (model.defaults, exp, sub)

    def inherit(name: str, fallback: Any) -> Any:
        value = fallback
        for layer in layers:
            own = layer.seed_list() if name == "seeds" else getattr(layer, name)
            if own is not None:
                value = own
        return value

    handlers_dir = handlers_dir_of(exp_id, exp)
    skip = sub.skip
    skipped = skip not in (None, False, "")
    # a skipped sub may have no handler yet: it is listed, never run
    handler_file, function, problems = sources.resolve_handler(root, handlers_dir, sub_id, sub.handler, check_handler and not skipped)
    spec = SubSpec(
        experiment_id=exp_id,
        sub_id=sub_id,
        name=sub.name or sub_id,
        params={**exp.params, **sub.params},
        stub_params={**exp.stub_params, **sub.stub_params},
        seeds=tuple(inherit("seeds", [0])),
        backend=inherit("backend", "local"),
        gpu=inherit("gpu", None),
        timeout_min=float(inherit("timeout_min", 30.0)),
        mem_mb=inherit("mem_mb", None),
        retries=int(inherit("retries", 0)),
        handler_file=handler_file,
        handler_function=function,
        skip_reason=("skipped in the plan" if skip is True else str(skip)) if skipped else None,
        info=sub.info,
    )
    return spec, problems


def _cycle_issues(model: PlanModel, raw: Any, shown: str) -> Iterator[Issue]:
    """Report each dependency cycle once, naming the whole loop."""
    # an experiment waits for its dependencies and for the experiments of the gates it requires
    graph = {exp_id: [d for d in [*exp.dependencies,
                                  *(e for g in exp.requires if g in model.gates for e in model.gates[g].experiments)]
                      if d in model.experiments]
             for exp_id, exp in model.experiments.items()}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []
    reported: set[frozenset[str]] = set()

    def visit(node: str) -> Iterator[Issue]:
        state[node] = 1
        stack.append(node)
        for dep in graph[node]:
            if state.get(dep) == 1:
                loop = stack[stack.index(dep):] + [dep]
                if frozenset(loop) not in reported and len(loop) > 2:
                    reported.add(frozenset(loop))
                    loc = ("experiments", node, "dependencies")
                    yield Issue(shown, ".".join(loc), f"dependency cycle: {' -> '.join(loop)}", line_of(raw, loc))
            elif dep not in state:
                yield from visit(dep)
        stack.pop()
        state[node] = 2

    for exp_id in graph:
        if exp_id not in state:
            yield from visit(exp_id)
