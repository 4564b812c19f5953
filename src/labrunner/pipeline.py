"""The plan as Snakemake sees it: targets, job inputs, params and arguments.

`workflow/rules/common.smk` builds one `Pipeline` from `--config` and names one input function after each
method here. Everything a rule needs is computed from the validated plan at DAG-building time,
without importing handler code, and cached: a dry run of a thousand subs must stay cheap.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import shlex
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from labrunner import layout, parsed, records, sources
from labrunner.compute import parse_gpu
from labrunner.errors import ConfigError, Issue, LabrunnerError
from labrunner.jobspec import BACKEND_ENV
from labrunner.layout import split_run
from labrunner.plan import DEFAULT_PLAN_PATH, Plan, SubSpec, load_plan_cached

__all__ = ["BACKEND_ENV", "CONFIG_KEYS", "Pipeline", "RunTarget", "cancel_scheduler_timers", "forced_run", "put_labrunner_on_path",
           "split_run"]

# A job's time limit is its attempts' timeouts plus this: Snakemake and labrunner start-up, and
# the records written after the handler stops; W&B's bounded init and finish come on top. So
# labrunner's own timeout fires first and records a Timeout, before a cluster kills the job.
RUNTIME_MARGIN_MIN = 2
# what the submitting side learnt of the handler files, kept between invocations (a cache)
SOURCE_FACTS = Path(".snakemake") / "labrunner" / "handler-facts.json"

# --config key -> what it accepts
CONFIG_KEYS = {
    "stub": "true or false: run every sub with stub_params into the stub/ tree",
    "backend": "local or modal: run every sub on this backend (overrides the plan)",
    "plan": "path of the research plan (default research/research_plan.yaml)",
    "ignore_gates": "true or false: run the subs of experiments whose required gates have not passed",
}
_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off", ""}


def _config_issue(key: str, message: str) -> Issue:
    return Issue("--config", key, message)


def _parse_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError([_config_issue(key, f"expected true or false, got {value!r}")])


@dataclass(frozen=True)
class RunTarget:
    """One job: one sub-experiment with one seed, and where its files go."""

    spec: SubSpec
    seed: int
    run: str  # the {run} wildcard: "<sub>" or "<sub>/seed-<n>"


@dataclass(frozen=True)
class _Holds:
    """What the records say, before any job runs, about experiments that depend on others.

    `held`: experiments whose dependency has not completed and will not run in this run: their
    runs stay out of the DAG, and the write-up says why. `ordered`: experiments whose dependency
    will run in this run: each of their runs that will run waits for the dependency's results,
    and checks again when it starts. `current`: runs whose result is current; they get no edge to
    upstream files at all, so a rebuild upstream cannot rerun them, and Snakemake judges them on
    their own inputs (no ancient(), whose interplay with upstream reruns makes a run need two
    calls). `gate_open`: required gates whose status this run may still change (see
    experiment_records for how gates hold runs).
    """

    held: dict[str, str]
    ordered: frozenset[str]
    current: frozenset[tuple[str, str]]
    gate_open: dict[str, list[str]]


@dataclass
class Pipeline:
    plan: Plan
    stub: bool = False
    backend: str | None = None
    workdir: Path = field(default_factory=Path.cwd)  # where Snakemake runs: paths are relative to it
    ignore_gates: bool = False
    forced: bool = False  # --forceall/--forcerun: every run reruns, whatever its records say
    main_process: bool = True  # False inside a remote job: no parse-time reading of the records

    @classmethod
    def from_config(cls, config: Mapping[str, Any], workdir: Path | None = None, forced: bool = False,
                    main_process: bool = True) -> "Pipeline":
        """Check --config and load the plan; every problem is an error before any job starts."""
        issues = []
        for key in config:
            if key not in CONFIG_KEYS:
                close = difflib.get_close_matches(str(key), CONFIG_KEYS, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                issues.append(_config_issue(str(key), f"unknown key; {hint}valid keys: "
                                            + "; ".join(f"{k} ({v})" for k, v in CONFIG_KEYS.items())))
        backend = config.get("backend")
        if backend is not None and str(backend) not in ("local", "modal"):
            issues.append(_config_issue("backend", f"expected local or modal, got {backend!r}"))
        if issues:
            raise ConfigError(issues)
        stub = _parse_bool("stub", config.get("stub", False))
        ignore_gates = _parse_bool("ignore_gates", config.get("ignore_gates", False))
        workdir = Path(workdir or Path.cwd())
        if main_process:  # the handlers as an earlier invocation parsed them (see save_source_facts)
            sources.load_facts(workdir / SOURCE_FACTS)
            parsed.use_store(workdir / parsed.STORE_PATH)  # and the records and results (save_parsed_yaml)
        # the project root is where Snakemake runs, wherever the plan file lives (plans/v2.yaml)
        # (cached: the aggregate steps and the end of the run, in this process, read it again)
        plan = load_plan_cached(Path(str(config.get("plan", DEFAULT_PLAN_PATH))), workdir,
                                check_handlers=main_process)  # a job: the submitting side checked them
        return cls(plan=plan, stub=stub, backend=str(backend) if backend is not None else None, workdir=workdir,
                   ignore_gates=ignore_gates, forced=forced, main_process=main_process)

    def save_source_facts(self) -> None:
        """Keep what this invocation learnt of the handler files (their functions and imports)
        for the next one: it parses only the files that changed since."""
        sources.save_facts(self.workdir / SOURCE_FACTS)

    def save_parsed_yaml(self) -> None:
        """Keep the records and results this invocation parsed for the next one (see
        labrunner.parsed): it parses only the texts it has not seen."""
        parsed.save_store()

    # --- paths ---------------------------------------------------------------------------------

    @cached_property
    def results_root(self) -> str:
        return layout.results_root(self.stub).as_posix()

    def _relative(self, path: Path) -> str:
        """A path under the plan's project root, as Snakemake sees it from the working dir."""
        if self._root_is_workdir:
            return path.as_posix()
        return os.path.relpath(self.plan.root / path, self.workdir)

    @cached_property
    def _root_is_workdir(self) -> bool:
        return os.path.abspath(self.plan.root) == os.path.abspath(self.workdir)

    @cached_property
    def runs_by_experiment(self) -> dict[str, list[RunTarget]]:
        runs: dict[str, list[RunTarget]] = {}
        for exp_id in self.plan.active_experiments:
            runs[exp_id] = [
                RunTarget(spec, seed, spec.sub_id if len(spec.seeds) == 1 else f"{spec.sub_id}/seed-{seed}")
                for spec in self.plan.subs(exp_id) for seed in spec.seeds
            ]
        return runs

    @cached_property
    def _run_index(self) -> dict[tuple[str, str], RunTarget]:
        return {(exp_id, run.run): run for exp_id, runs in self.runs_by_experiment.items() for run in runs}

    def run_target(self, exp_id: str, run: str) -> RunTarget:
        try:
            return self._run_index[(exp_id, run)]
        except KeyError:
            known = sorted({e for e, _ in self._run_index})
            raise ConfigError([_config_issue("target", f"{exp_id}/{run} is not a sub-experiment run of the plan "
                                             f"(experiments: {', '.join(known)})")]) from None

    def run_file(self, exp_id: str, run: str, name: str) -> str:
        return f"{self.results_root}/{exp_id}/{run}/{name}"

    def _runs(self, exp_id: str) -> list[RunTarget]:
        """The runs of an active experiment; an unknown id (a target typed by hand) is an error
        that lists the valid ones."""
        try:
            return self.runs_by_experiment[exp_id]
        except KeyError:
            valid = ", ".join(self.runs_by_experiment) or "none"
            raise ConfigError([_config_issue("target", f"names an unknown or archived experiment {exp_id!r} "
                                             f"(experiments: {valid})")]) from None

    def experiment_records(self, exp_id: str, gates_file: str | None = None) -> list[str]:
        """The aggregate's inputs: every result.yaml, and every failure.yaml that exists.

        A failure record is written by the sub's own job (there is none before its first run),
        and any attempt rewrites it, newer than the aggregates: that is what makes the next run
        rerun a failed sub (see rules/aggregate.smk). The runs of a held experiment that have no
        current result are left out: they do not run (the write-up says what holds them). An
        experiment that requires gates is held while `gates_file` (the `gates` checkpoint's
        output, read only once it is up to date) says one of them has not passed.
        """
        held = exp_id in self._holds.held or bool(gates_file and self.closed_gates(exp_id, gates_file))
        files = []
        for run in self._runs(exp_id):
            if not held or (exp_id, run.run) in self._holds.current:
                files.append(self.run_file(exp_id, run.run, "result.yaml"))
            failure = self.run_file(exp_id, run.run, "failure.yaml")
            if os.path.exists(failure):
                files.append(failure)
        return files

    def waits_for_gates(self, exp_id: str) -> bool:
        """Whether the experiment's runs depend on the gates' status (its aggregate then asks the
        `gates` checkpoint first, so that they are decided after the gates are up to date)."""
        self._runs(exp_id)  # an unknown experiment in a target is an error that lists the valid ones
        return bool(self.plan.experiments[exp_id].requires) and not self.ignore_gates

    def closed_gates(self, exp_id: str, gates_file: str) -> list[str]:
        """The gates the experiment requires that gates_file does not show as passed."""
        from labrunner.yamlio import load_yaml

        gates = (load_yaml(Path(gates_file)) or {}).get("gates") or {}
        return [gate_id for gate_id in self.plan.experiments[exp_id].requires
                if (gates.get(gate_id) or {}).get("status") != "passed"]

    @cached_property
    def _holds(self) -> _Holds:
        """Decided once, from the records as they are before any job runs (see _Holds)."""
        waiting = [exp_id for exp_id in self.runs_by_experiment
                   if self.plan.experiments[exp_id].dependencies or self.plan.experiments[exp_id].requires]
        if not waiting or not self.main_process:
            return _Holds({}, frozenset(), frozenset(), {})
        from labrunner.aggregate import collect_project
        from labrunner.state import RunStatus, run_states

        view = collect_project(self.plan, self.stub, self.ignore_gates, only=waiting)
        current: set[tuple[str, str]] = set()
        will_run: dict[str, bool] = {}
        held: dict[str, str] = {}
        ordered: set[str] = set()
        gate_open: dict[str, list[str]] = {}
        for exp_id in view.experiments:  # upstream first
            if not self.forced:
                for run, state in zip(self.runs_by_experiment[exp_id], run_states(self.plan, exp_id, self.stub)):
                    if state.status == RunStatus.COMPLETED:
                        current.add((exp_id, run.run))
            unmet_final, unmet_open = self._unmet_dependencies(exp_id, view, will_run)
            if unmet_final:
                held[exp_id] = "; ".join(unmet_final)
            elif unmet_open:
                ordered.add(exp_id)
            if self.waits_for_gates(exp_id):
                gate_open[exp_id] = [g for g in self.plan.experiments[exp_id].requires
                                     if any(will_run.get(e) for e in self.plan.gates[g].experiments)]
            will_run[exp_id] = exp_id not in held and any(
                (exp_id, run.run) not in current for run in self.runs_by_experiment[exp_id])
        return _Holds(held, frozenset(ordered), frozenset(current), gate_open)

    def _unmet_dependencies(self, exp_id: str, view: Any, will_run: Mapping[str, bool]) -> tuple[list[str], list[str]]:
        """(dependencies unmet for good in this run, dependencies that will run in this run)."""
        final, open_ = [], []
        for dep in self.plan.experiments[exp_id].dependencies:
            upstream = view.experiments.get(dep)
            if upstream is None or (upstream["status"] == "completed" and not will_run.get(dep)):
                continue
            (open_ if will_run.get(dep) else final).append(f"waits for {dep} ({upstream['status']})")
        return final, open_

    def plan_digest(self, refresh: bool = False) -> str:
        """The plan file's content hash as the DAG was built from it (or, with refresh, now)."""
        digest = sources.file_sha256(self.plan.path) if self.plan.path.exists() else ""
        if refresh:
            return digest
        return self.__dict__.setdefault("_plan_digest", digest)

    def announce_holds(self) -> None:
        """Say, before any job starts (dry runs too), which experiments do not run and why, and
        which wait for a gate that this run decides."""
        for exp_id, why in self._holds.held.items():
            print(f"labrunner: {exp_id} does not run: {why}", file=sys.stderr)
        for exp_id, gates in self._holds.gate_open.items():
            if gates:
                print(f"labrunner: {exp_id} runs only if {' and '.join(gates)} passes, which this run decides "
                      f"after its experiments; a dry run cannot list its jobs yet", file=sys.stderr)

    def set_aside_damaged_results(self) -> list[str]:
        """Find result files that were truncated or edited on disk, move each into its run's
        history/ (nothing is deleted) and record that in its failure.yaml, so that the next
        Snakemake pass reruns the sub (see records.record_damage).

        Done while the Snakefile is read, before Snakemake looks at any file (it caches what it
        has seen), and so in a dry run too: the dry run then shows the rerun it announces.
        """
        damaged = []
        for exp_id, runs in self.runs_by_experiment.items():
            for run in runs:
                path = Path(self.run_file(exp_id, run.run, "result.yaml"))
                problem = records.damage_of(path) if path.exists() else None
                if problem is not None:
                    kept = records.record_damage(layout.RunPaths(path.parent), problem)
                    damaged.append(str(path))
                    print(f"labrunner: {path} is damaged ({problem}); moved to {kept}; {exp_id}/{run.run} will be rebuilt",
                          file=sys.stderr)
        return damaged

    def mark_unrecorded_runs(self) -> list[str]:
        """Rerun a run whose records are gone while the write-up still reports them.

        A run folder deleted by hand (no failure.yaml, although results.yaml reports the run as
        having run) gets `status: none`; a result.yaml that is gone although its last attempt
        completed (deleted by hand, or discarded by Snakemake when its job was cancelled) gets a
        failure record that says so. Either new input is newer than the aggregate, so Snakemake
        rebuilds the run; without it the missing file would never be rebuilt (Snakemake does not
        rebuild a missing intermediate file while the files downstream of it are newer).
        """
        marked = []
        for exp_id, runs in self.runs_by_experiment.items():
            if not os.path.isdir(f"{self.results_root}/{exp_id}"):
                continue  # nothing ran and nothing reports a run (a fresh tree: checked once, not per run)
            reported: set[str] | None = None  # read only when a run has no records at all
            for run in runs:
                result = self.run_file(exp_id, run.run, "result.yaml")
                if os.path.exists(result):  # strings, not Path: this runs for every run at every invocation
                    continue
                paths = layout.RunPaths(Path(result).parent)
                if not paths.failure.exists():
                    reported = self._reported_runs(exp_id) if reported is None else reported
                    if run.run in reported:
                        records.write_none(paths.failure)
                        marked.append(f"{exp_id}/{run.run}")
                    continue
                previous = records.read_failure(paths)
                if previous.get("status") in (records.NONE, records.RESOLVED) and any(paths.history.glob("*.result.yaml")):
                    records.record_missing_result(paths, previous)
                    marked.append(f"{exp_id}/{run.run}")
                    print(f"labrunner: {paths.result} is gone although its last attempt completed; "
                          f"{exp_id}/{run.run} will be rebuilt", file=sys.stderr)
        return marked

    def _reported_runs(self, exp_id: str) -> set[str]:
        """The runs an experiment's results.yaml reports as having run (not pending or held)."""
        from labrunner.yamlio import load_yaml

        path = Path(self.experiment_results(exp_id))
        if not path.exists():
            return set()
        try:
            subs = (load_yaml(path) or {}).get("subs") or {}
        except LabrunnerError:
            return set()
        seeds_of = {spec.sub_id: spec.seeds for spec in self.plan.subs(exp_id)}
        reported = set()
        for sub_id, sub in subs.items():
            for entry in sub.get("seeds") or [sub]:
                if sub_id in seeds_of and entry.get("status") not in ("pending", "held", "skipped", None):
                    reported.add(sub_id if len(seeds_of[sub_id]) <= 1 else f"{sub_id}/seed-{entry.get('seed')}")
        return reported

    def require_shared_results(self, shared_fs_usage: Iterable[str]) -> None:
        """A job writes failure.yaml, metrics.jsonl, artifacts/, history/ and wandb/ besides its
        result: only a file system shared with the jobs brings them all back (an executor
        without one copies back declared outputs only, and the reruns hinge on failure.yaml)."""
        if "input-output" not in set(shared_fs_usage):
            raise ConfigError([Issue("--shared-fs-usage", "input-output",
                                     "labrunner needs the results folder on a file system shared with the jobs: "
                                     "a sub writes failure.yaml, metrics.jsonl, artifacts/, history/ and wandb/ "
                                     "besides result.yaml, and an executor without a shared file system brings "
                                     "back only result.yaml and run.log; keep input-output in --shared-fs-usage")])

    def experiment_results(self, exp_id: str) -> str:
        self._runs(exp_id)  # an unknown experiment in a target is an error, not a missing file
        return f"{self.results_root}/{exp_id}/results.yaml"

    def requirement_inputs(self, exp_id: str, run: str) -> list[str]:
        """What a run waits for before it starts: the results of the experiments it depends on, only
        for a run that will run while a dependency will run too (see _Holds). Plain inputs, never
        ancient(): a run that waits here reruns anyway."""
        if exp_id not in self._holds.ordered or (exp_id, run) in self._holds.current:
            return []
        experiment = self.plan.experiments[exp_id]
        return [self.experiment_results(dep) for dep in experiment.dependencies if dep in self.runs_by_experiment]

    def all_experiment_results(self) -> list[str]:
        return [self.experiment_results(exp_id) for exp_id in self.plan.active_experiments]

    def gated_experiment_results(self) -> list[str]:
        gated = {exp_id for gate in self.plan.gates.values() for exp_id in gate.experiments}
        return [self.experiment_results(exp_id) for exp_id in self.plan.active_experiments if exp_id in gated]

    def experiment_findings(self, exp_id: str) -> str:
        return layout.experiment_findings_path(exp_id, self.stub).as_posix()

    def all_experiment_findings(self) -> list[str]:
        return [self.experiment_findings(exp_id) for exp_id in self.plan.active_experiments]

    @cached_property
    def findings_dir(self) -> str:
        return layout.project_findings_path(self.stub).parent.as_posix()

    @cached_property
    def project_findings(self) -> str:
        return layout.project_findings_path(self.stub).as_posix()

    @cached_property
    def project_findings_html(self) -> str:
        return layout.project_findings_html_path(self.stub).as_posix()

    @cached_property
    def gates_file(self) -> str:
        return layout.gates_path(self.stub).as_posix()

    @cached_property
    def plan_file(self) -> str:
        return os.path.relpath(self.plan.path.resolve(), self.workdir)

    # --- one job -------------------------------------------------------------------------------

    def handler_inputs(self, exp_id: str, run: str) -> list[str]:
        """The handler file and every project module it imports: editing any reruns the sub."""
        spec = self.run_target(exp_id, run).spec
        return self._handler_files(spec.handler_file)

    @cached_property
    def handler_input_pattern(self) -> str | None:
        """`handlers/{exp}/{run}.py` when that names every run's inputs: each handler at its
        default place, importing no project module, each sub with one seed (so the run is the
        sub) and no run waiting for another experiment's results; else None (an input function).
        A pattern costs Snakemake nothing per job, where a function is called for every job."""
        root = str(self.plan.root)
        for exp_id, runs in self.runs_by_experiment.items():
            for run in runs:
                # strings, not Path: this runs for every run at every invocation
                handler_file = str(run.spec.handler_file)
                if handler_file != os.path.join("handlers", exp_id, f"{run.run}.py"):
                    return None
                if sources.module_info(os.path.join(root, handler_file)).imports and len(
                        self._handler_files(run.spec.handler_file)) > 1:
                    return None
                if self.requirement_inputs(exp_id, run.run):
                    return None
        return f"{self._relative(Path('handlers'))}/{{exp}}/{{run}}.py"

    def check_targets(self, targets: Iterable[str]) -> None:
        """A result file among `targets` (words of the command line) that names a run the plan
        does not have is an error that lists the experiments (the input function of the run's
        rule says so too, but a rule with an input pattern has none)."""
        results = re.escape(self.results_root)
        for target in targets:
            match = re.fullmatch(rf"{results}/([^/]+)/(.+)/result\.yaml", os.path.normpath(target))
            if match:
                self.run_target(match[1], match[2])

    def _handler_files(self, handler_file: Path) -> list[str]:
        cache = self.__dict__.setdefault("_handler_cache", {})
        if handler_file not in cache:
            absolute = self.plan.root / handler_file
            modules = sources.local_imports(absolute, self.plan.root) if sources.module_info(absolute).imports else []
            cache[handler_file] = [self._relative(handler_file)] + [os.path.relpath(path, self.workdir) for path in modules]
        return cache[handler_file]

    def run_spec(self, exp_id: str, run: str) -> str:
        """What a result depends on besides code, as the job's `params` (a change reruns exactly
        this sub) and as the spec the job runs with: the job takes its params, seed and handler
        from here, not from the plan file, which may have been edited since the DAG was built."""
        target = self.run_target(exp_id, run)
        return json.dumps({"params": target.spec.params_for(self.stub), "seed": target.seed,
                           "handler": f"{target.spec.handler_file.as_posix()}::{target.spec.handler_function}"},
                          sort_keys=True)

    def backend_of(self, spec: SubSpec) -> str:
        return self.backend or spec.backend

    @cached_property
    def run_options(self) -> str:
        """The options of `labrunner run` shared by every job, shell-quoted (one string for all
        jobs: a per-job function would cost time on every job of a large DAG)."""
        options = ["--plan", self.plan_file, "--results-dir", self.results_root, "--from-snakemake"]
        flags = (["--stub"] if self.stub else []) + (["--ignore-gates"] if self.ignore_gates else [])
        return shlex.join(options + flags)

    def export_backend(self) -> None:
        """Pass `--config backend=...` to the jobs through the environment, not through params:
        switching backends must not rerun subs that already have results."""
        if self.backend:
            os.environ[BACKEND_ENV] = self.backend
        else:
            os.environ.pop(BACKEND_ENV, None)

    @cached_property
    def uses_gpus(self) -> bool:
        return any(self._gpu(exp_id, run.run) for exp_id, runs in self.runs_by_experiment.items() for run in runs)

    def _gpu(self, exp_id: str, run: str) -> tuple[str, int, str] | None:
        """(backend, count, type) of the GPU a job asks for; None without one (stub runs ask
        for none). The plan says `gpu: A100` or, Modal's way, `gpu: A100:2` for two."""
        spec = self.run_target(exp_id, run).spec
        if not spec.gpu or self.stub:
            return None
        kind, count = parse_gpu(spec.gpu)
        return self.backend_of(spec), count, str(kind)

    def gpu_count(self, exp_id: str, run: str) -> int:
        """GPUs a job holds where Snakemake runs it (this machine, or a cluster node through an
        executor): counts against `--resources gpu=N`; a Modal job holds none here."""
        gpu = self._gpu(exp_id, run)
        return gpu[1] if gpu and gpu[0] == "local" else 0

    def gpu_model(self, exp_id: str, run: str) -> str:
        """The GPU type for executors such as SLURM's (`--gpus=<model>:<n>`): lower case, and
        only the characters they accept; "" when the job asks for no GPU here."""
        gpu = self._gpu(exp_id, run)
        if not gpu or gpu[0] != "local":
            return ""
        return re.sub(r"[^a-z0-9_.]", "_", gpu[2].lower())

    def runtime_min(self, exp_id: str, run: str) -> int:
        """The job's time limit in minutes (Snakemake's `runtime`, SLURM's --time): every attempt
        runs inside the one job, each up to timeout_min, then the margin and W&B's timeouts."""
        spec = self.run_target(exp_id, run).spec
        wandb = self.plan.model.wandb
        tracking_s = wandb.init_timeout_s + wandb.finish_timeout_s
        return math.ceil(spec.timeout_min * (spec.retries + 1) + tracking_s / 60) + RUNTIME_MARGIN_MIN

    def mem_mb(self, exp_id: str, run: str) -> int:
        """The job's memory in MB (Snakemake's `mem_mb`, SLURM's --mem), from the plan; only asked
        for when the plan sets it (then every sub has one: plan validation sees to it)."""
        mem_mb = self.run_target(exp_id, run).spec.mem_mb
        assert mem_mb is not None, f"{exp_id}/{run} has no mem_mb"
        return mem_mb

    def uniform(self, per_run: Callable[[str, str], int]) -> int | None:
        """The value `per_run(exp_id, run)` has for every run, when it is the same for all (the
        usual case for time and memory); None when runs differ, or there are none. A rule takes
        a value at no cost per job, where a function is called for every job of the DAG."""
        values = {per_run(exp_id, run.run) for exp_id, runs in self.runs_by_experiment.items() for run in runs}
        return values.pop() if len(values) == 1 else None

    @cached_property
    def sets_memory(self) -> bool:
        return any(run.spec.mem_mb is not None for runs in self.runs_by_experiment.values() for run in runs)

    def modal_gpu(self, exp_id: str, run: str) -> str:
        """The GPU a Modal job asks Modal for (shown by `snakemake -n`); "" for none."""
        gpu = self._gpu(exp_id, run)
        if not gpu or gpu[0] != "modal":
            return ""
        _, count, kind = gpu
        return kind if count == 1 else f"{kind}:{count}"



def forced_run(dag_settings: Any) -> bool:
    """Whether Snakemake was told to rerun jobs whatever their files say (--forceall,
    --forcerun, --forcetargets): then no run can be taken as current at parse time."""
    return bool(getattr(dag_settings, "forceall", False) or getattr(dag_settings, "forcerun", None)
                or getattr(dag_settings, "forcetargets", False))


def put_labrunner_on_path() -> None:
    """Put the bin folder of the Python running Snakemake first on PATH, so that jobs find its
    `labrunner` even when the virtual environment was not activated (`.venv/bin/snakemake`)."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + path


def cancel_scheduler_timers() -> int:
    """Cancel the wake-up timers Snakemake's scheduler leaves behind; how many. After each round
    it starts a one-second `threading.Timer` (its --max-jobs-per-timespan check), and Python waits
    for such a timer before it exits, so a run that executed jobs ended up to a second after its
    last word. Called by the end-of-run hooks, when the scheduler is done; a Snakemake whose
    scheduler names that function otherwise is left as it is (only the wait comes back)."""
    cancelled = 0
    for thread in threading.enumerate():
        function = getattr(thread, "function", None)
        if isinstance(thread, threading.Timer) and "._schedule_reevalutation." in getattr(function, "__qualname__", ""):
            thread.cancel()
            cancelled += 1
    return cancelled
