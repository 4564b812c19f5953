"""The plan as Snakemake sees it: targets, job inputs, params and arguments.

`workflow/rules/common.smk` builds one `Pipeline` from `--config` and names one input function after each
method here. Everything a rule needs is computed from the validated plan at DAG-building time,
without importing handler code, and cached: a dry run of a thousand subs must stay cheap.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from labrunner import layout, records, sources
from labrunner.errors import ConfigError, Issue
from labrunner.plan import DEFAULT_PLAN_PATH, Plan, SubSpec, load_plan

__all__ = ["BACKEND_ENV", "CONFIG_KEYS", "Pipeline", "RunTarget", "put_labrunner_on_path", "split_run"]

BACKEND_ENV = "LABRUNNER_BACKEND"
# A job's time limit is its attempts' timeouts plus this: Snakemake and labrunner start-up, and
# the records written after the handler stops; W&B's bounded init and finish come on top. So
# labrunner's own timeout fires first and records a Timeout, before a cluster kills the job.
RUNTIME_MARGIN_MIN = 2

# --config key -> what it accepts
CONFIG_KEYS = {
    "stub": "true or false: run every sub with stub_params into the stub/ tree",
    "backend": "local or modal: run every sub on this backend (overrides the plan)",
    "plan": "path of the research plan (default research/research_plan.yaml)",
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


def split_run(run: str) -> tuple[str, int | None]:
    """"e1_2/seed-1" -> ("e1_2", 1); "e1_1" -> ("e1_1", None): the {run} wildcard's parts."""
    sub, _, seed = run.partition("/seed-")
    return sub, int(seed) if seed.isdigit() else None


@dataclass(frozen=True)
class RunTarget:
    """One job: one sub-experiment with one seed, and where its files go."""

    spec: SubSpec
    seed: int
    run: str  # the {run} wildcard: "<sub>" or "<sub>/seed-<n>"


@dataclass
class Pipeline:
    plan: Plan
    stub: bool = False
    backend: str | None = None
    workdir: Path = field(default_factory=Path.cwd)  # where Snakemake runs: paths are relative to it

    @classmethod
    def from_config(cls, config: Mapping[str, Any], workdir: Path | None = None, *,
                    check_handlers: bool = True) -> "Pipeline":
        """Check --config and load the plan; every problem is an error before any job starts.
        A job (check_handlers=False) skips the handler checks the submitting side has done."""
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
        plan = load_plan(Path(str(config.get("plan", DEFAULT_PLAN_PATH))), check_handlers=check_handlers)
        return cls(plan=plan, stub=stub, backend=str(backend) if backend is not None else None,
                   workdir=Path(workdir or Path.cwd()))

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

    def experiment_records(self, exp_id: str) -> list[str]:
        """The aggregate's inputs: every result.yaml, and every failure.yaml that exists.

        A failure record is written by the sub's own job (there is none before its first run),
        and any attempt rewrites it, newer than the aggregates: that is what makes the next run
        rerun a failed sub (see workflow/rules/aggregate.smk).
        """
        files = []
        for run in self._runs(exp_id):
            files.append(self.run_file(exp_id, run.run, "result.yaml"))
            failure = self.run_file(exp_id, run.run, "failure.yaml")
            if os.path.exists(failure):
                files.append(failure)
        return files

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

    def record_discarded_results(self) -> list[str]:
        """Find results that were written and then deleted, and give each a failure record that
        says so (see records.record_discard): without one, the sub would show as pending.

        Snakemake deletes the output of a job it takes for failed, even when labrunner wrote a
        complete result first: a cluster job cancelled, or out of time, as it finished. Checked
        while the Snakefile is read and again when a run ends with errors.
        """
        discarded = []
        for exp_id, runs in self.runs_by_experiment.items():
            for run in runs:
                paths = layout.RunPaths(Path(self.run_file(exp_id, run.run, "result.yaml")).parent)
                if paths.result.exists() or not paths.failure.exists():
                    continue
                kept = records.discarded_result(paths)
                if kept is None or not self._is_current(records.read_record(kept, verify=False), run):
                    continue  # never completed, or superseded by a change: pending is the truth
                records.record_discard(paths, kept)
                discarded.append(str(paths.result))
                print(f"labrunner: {paths.result} was deleted after it was written (kept as {kept}); "
                      f"{exp_id}/{run.run} is recorded as failed and reruns", file=sys.stderr)
        return discarded

    def _is_current(self, record: Mapping[str, Any], run: RunTarget) -> bool:
        """Whether a result was made by the sub as the plan and its handler stand now."""
        handler = record.get("handler") or {}
        handler_path = self.plan.root / run.spec.handler_file
        return (record.get("params") == run.spec.params_for(self.stub) and record.get("seed") == run.seed
                and handler.get("file") == run.spec.handler_file.as_posix()
                and handler.get("function") == run.spec.handler_function
                and handler_path.exists() and handler.get("sha256") == sources.file_sha256(handler_path))

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

    def dependency_results(self, exp_id: str) -> list[str]:
        """results.yaml of the experiments this one depends on (active ones only)."""
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

    def _handler_files(self, handler_file: Path) -> list[str]:
        cache = self.__dict__.setdefault("_handler_cache", {})
        if handler_file not in cache:
            absolute = self.plan.root / handler_file
            modules = sources.local_imports(absolute, self.plan.root) if sources.module_info(absolute).imports else []
            cache[handler_file] = [self._relative(handler_file)] + [os.path.relpath(path, self.workdir) for path in modules]
        return cache[handler_file]

    def run_params(self, exp_id: str, run: str) -> dict[str, Any]:
        """What a result depends on besides code: a change reruns exactly this sub."""
        target = self.run_target(exp_id, run)
        return {"params": target.spec.params_for(self.stub), "seed": target.seed,
                "handler": f"{target.spec.handler_file.as_posix()}::{target.spec.handler_function}"}

    def backend_of(self, spec: SubSpec) -> str:
        return self.backend or spec.backend

    @cached_property
    def run_options(self) -> str:
        """The options of `labrunner run` shared by every job, shell-quoted (one string for all
        jobs: a per-job function would cost time on every job of a large DAG)."""
        options = ["--plan", self.plan_file, "--results-dir", self.results_root]
        return shlex.join(options + (["--stub"] if self.stub else []))

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
        kind, _, count = spec.gpu.partition(":")
        return self.backend_of(spec), int(count) if count.isdigit() else 1, kind

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



def put_labrunner_on_path() -> None:
    """Put the bin folder of the Python running Snakemake first on PATH, so that jobs find its
    `labrunner` even when the virtual environment was not activated (`.venv/bin/snakemake`)."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + path
