"""Where everything lives, relative to the project root; the one place paths are spelled.

Stub runs get a tree of their own under `stub/`, so they can never satisfy, or overwrite, the
targets of a real run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_PLAN_PATH",
    "MAX_ID_BYTES",
    "RESERVED_NAMES",
    "RunPaths",
    "reserved_name_problem",
    "experiment_findings_html_path",
    "experiment_findings_path",
    "experiment_results_dir",
    "gates_path",
    "project_findings_html_path",
    "project_findings_path",
    "results_root",
    "run_dir",
    "split_run",
]

STUB_PREFIX = Path("stub")
DEFAULT_PLAN_PATH = Path("research/research_plan.yaml")

# The names labrunner gives its own files and folders in the results tree (the aggregates' in
# rules/aggregate.smk, a run's below): an experiment or sub id spelled like one would put a sub's
# folder where an aggregate writes, or the reverse. Compared without case, as macOS and Windows
# file systems do.
RESERVED_NAMES = frozenset({
    "results.yaml", "metrics.md", "metrics.csv", "criteria.png", "sweeps", "curves", "report", "findings.html",
    "aggregate.log", "findings.log",  # results/<exp>/ (findings.html also in results/: the project's)
    "gates.yaml", "gates.log",  # results/
    "result.yaml", "failure.yaml", "metrics.jsonl", "run.log", "artifacts", "history", "work", "wandb",
    ".labrunner",  # results/<exp>/<sub>/
})
_SEED_DIR = re.compile(r"seed-[0-9]+", re.IGNORECASE)  # results/<exp>/<sub>/seed-<n>/
# An id is a folder name: NAME_MAX is 255 bytes on every common file system; the rest is room
# for what tools add to a name (Snakemake's and editors' temporary and backup files).
MAX_ID_BYTES = 200


def _tree(stub: bool) -> Path:
    return STUB_PREFIX if stub else Path()


def reserved_name_problem(name: str) -> str | None:
    """Why `name` cannot be an experiment or sub id, as a folder in the results tree; or None."""
    if name.casefold() in RESERVED_NAMES or _SEED_DIR.fullmatch(name):
        taken = ", ".join(sorted(RESERVED_NAMES)) + ", seed-<n>"
        return f"is a name labrunner gives its own files and folders in the results tree ({taken}); rename it"
    size = len(name.encode("utf-8"))
    if size > MAX_ID_BYTES:
        return (f"is {size} bytes long; an id is a folder name, and the file system allows {MAX_ID_BYTES} "
                "(255 bytes, less room for what tools add to a name): shorten it")
    return None


def results_root(stub: bool = False) -> Path:
    return _tree(stub) / "results"


def split_run(run: str) -> tuple[str, int | None]:
    """"e1_2/seed-1" -> ("e1_2", 1); "e1_1" -> ("e1_1", None): the {run} wildcard's parts."""
    sub, _, seed = run.partition("/seed-")
    return sub, int(seed) if seed.isdigit() else None


def run_dir(root: Path, experiment_id: str, sub_id: str, seed: int, seeds: tuple[int, ...] | list[int]) -> Path:
    """results/<exp>/<sub>/, or results/<exp>/<sub>/seed-<n>/ for subs run with several seeds."""
    base = Path(root) / experiment_id / sub_id
    return base if len(seeds) <= 1 else base / f"seed-{seed}"


def experiment_results_dir(experiment_id: str, stub: bool = False) -> Path:
    return results_root(stub) / experiment_id


def gates_path(stub: bool = False) -> Path:
    return results_root(stub) / "gates.yaml"


def project_findings_path(stub: bool = False) -> Path:
    return _tree(stub) / "research" / "FINDINGS.md"


def experiment_findings_path(experiment_id: str, stub: bool = False) -> Path:
    return _tree(stub) / "research" / "experiments" / experiment_id / "FINDINGS.md"


def project_findings_html_path(stub: bool = False) -> Path:
    """The project FINDINGS as one HTML page, for Snakemake's report (labrunner.report)."""
    return results_root(stub) / "findings.html"


def experiment_findings_html_path(experiment_id: str, stub: bool = False) -> Path:
    return experiment_results_dir(experiment_id, stub) / "findings.html"


@dataclass(frozen=True)
class RunPaths:
    """The files of one sub-experiment run (one sub, one seed)."""

    run_dir: Path

    @property
    def result(self) -> Path:
        return self.run_dir / "result.yaml"

    @property
    def failure(self) -> Path:
        return self.run_dir / "failure.yaml"

    @property
    def metrics(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def log(self) -> Path:
        return self.run_dir / "run.log"

    @property
    def artifacts(self) -> Path:
        return self.run_dir / "artifacts"

    @property
    def history(self) -> Path:
        """Every final record ever written, so a rerun never loses an earlier result."""
        return self.run_dir / "history"

    @property
    def lock(self) -> Path:
        """Held (flock) by the one attempt that runs now; see labrunner.locks."""
        return self.run_dir / ".lock"

    @property
    def internal(self) -> Path:
        """Scratch files between the supervisor and the handler's process."""
        return self.run_dir / ".labrunner"
