"""`labrunner init`, `labrunner new experiment`, `labrunner new sub`, `labrunner guide`.

init makes any repository a labrunner project: a thin Snakefile that includes the workflow of
the installed package (no copy of the rules, so an upgrade leaves nothing stale), the workflow
profile, a commented plan skeleton, `handlers/`, .gitignore lines and the coding agents' guide
in AGENTS.md. It never overwrites a file and can run any number of times.

`new` adds to the plan by inserting text (labrunner.plan_edit), so the researcher's comments and
layout stay as they were, writes handler templates that raise NotImplementedError (a template
is never a fake result), and checks that the edited plan validates before anything is kept.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

import yaml

from labrunner import plan_edit
from labrunner.errors import ConfigError, Issue, PlanError
from labrunner.plan import DEFAULT_PLAN_PATH, ID_PATTERN, load_plan
from labrunner.sources import default_function_names
from labrunner.workflow import PROFILE_TEMPLATE

__all__ = [
    "AGENTS_BEGIN", "AGENTS_END", "GITIGNORE_LINES", "Metric", "SNAKEFILE_TEMPLATE", "guide_text", "init_project",
    "new_experiment", "new_sub", "parse_metric",
]

TEMPLATES = Path(__file__).resolve().parent / "templates"
SNAKEFILE_TEMPLATE = TEMPLATES / "Snakefile"
GITIGNORE_LINES = ("results/", "stub/", ".snakemake/")
AGENTS_BEGIN = "<!-- labrunner:begin agents-guide -->"
AGENTS_END = "<!-- labrunner:end agents-guide -->"
_DIRECTIONS = ("higher", "lower")


# --- init ------------------------------------------------------------------------------------------

def guide_text() -> str:
    """The loop for coding agents (what `labrunner guide` prints and AGENTS.md gets)."""
    return (TEMPLATES / "AGENTS.md").read_text(encoding="utf-8")


def _write_new(root: Path, relative: str, text: str, report: list[str]) -> bool:
    """Write a file that does not exist yet; an existing one is kept as it is, and said so."""
    path = root / relative
    if path.exists():
        report.append(f"kept   {relative} (exists)")
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    report.append(f"wrote  {relative}")
    return True


def _plan_skeleton(root: Path) -> str:
    name = root.resolve().name or "project"
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "project"
    template = string.Template((TEMPLATES / "research_plan.yaml").read_text(encoding="utf-8"))
    return template.substitute(name=json.dumps(name), wandb_project=json.dumps(slug))


def _add_gitignore_lines(root: Path, report: list[str]) -> None:
    path = root / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    present = {line.strip() for line in text.splitlines()}
    missing = [line for line in GITIGNORE_LINES if line not in present and line.rstrip("/") not in present]
    if not missing:
        report.append("kept   .gitignore (has results/, stub/, .snakemake/)")
        return
    block = "# labrunner: what the pipeline writes\n" + "".join(f"{line}\n" for line in missing)
    separator = "" if not text else ("\n" if text.endswith("\n") else "\n\n")
    path.write_text(text + separator + block, encoding="utf-8")
    report.append(f"added  {', '.join(missing)} to .gitignore")


def _add_agents_section(root: Path, report: list[str]) -> None:
    """Append the guide to AGENTS.md between markers; an AGENTS.md of the project's own is kept
    as it is above it, and a section already there is left alone."""
    path = root / "AGENTS.md"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if AGENTS_BEGIN in text:
        report.append("kept   AGENTS.md (has the labrunner section)")
        return
    section = f"{AGENTS_BEGIN}\n{guide_text()}{AGENTS_END}\n"
    separator = "" if not text else ("\n" if text.endswith("\n") else "\n\n")
    path.write_text(text + separator + section, encoding="utf-8")
    report.append("added  the labrunner section to AGENTS.md" if text else "wrote  AGENTS.md")


def init_project(root: Path) -> list[str]:
    """Make `root` a labrunner project; return what was written and what was kept, line by line."""
    root.mkdir(parents=True, exist_ok=True)
    report: list[str] = []
    _write_new(root, "Snakefile", SNAKEFILE_TEMPLATE.read_text(encoding="utf-8"), report)
    _write_new(root, "profiles/default/config.yaml", PROFILE_TEMPLATE.read_text(encoding="utf-8"), report)
    _write_new(root, DEFAULT_PLAN_PATH.as_posix(), _plan_skeleton(root), report)
    experiments_dir = root / "research" / "experiments"
    if not experiments_dir.is_dir():
        experiments_dir.mkdir(parents=True)
        report.append("made   research/experiments/")
    _write_new(root, "handlers/__init__.py",
               '"""The project\'s handlers: handlers/<experiment id>/<sub id>.py, and shared modules\n'
               'imported as `from handlers.<module> import ...`."""\n', report)
    _add_gitignore_lines(root, report)
    _add_agents_section(root, report)
    report.append("next:  labrunner new experiment ID --sub SUB [--sub SUB]... [--metric NAME:higher|lower]")
    return report


# --- new experiment / new sub ----------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """A success criterion asked for on the command line: `accuracy:higher`, or with its tiers
    `accuracy:higher:0.97,0.95,0.90` (target, acceptable, failure)."""

    name: str
    direction: str
    tiers: tuple[float, ...] = ()

    def flow(self) -> str:
        names = ("target", "acceptable", "failure")
        parts = [f"{tier}: {value:g}" for tier, value in zip(names, self.tiers)]
        return "{" + ", ".join([*parts, f"direction: {self.direction}"]) + "}"


def parse_metric(text: str) -> Metric:
    name, _, rest = text.partition(":")
    direction, _, tiers_text = rest.partition(":")
    problem = None
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./-]*", name):
        problem = "expected NAME:higher or NAME:lower (NAME: letters, digits, _ . / -)"
    elif direction not in _DIRECTIONS:
        problem = f"expected NAME:higher or NAME:lower, got direction {direction!r}"
    tiers: list[float] = []
    if problem is None and tiers_text:
        try:
            tiers = [float(value) for value in tiers_text.split(",")]
        except ValueError:
            problem = f"expected up to three numbers after the direction (target,acceptable,failure), got {tiers_text!r}"
        if len(tiers) > 3:
            problem = f"expected at most three tiers (target,acceptable,failure), got {len(tiers)}"
    if problem:
        raise ConfigError([Issue("--metric", text, problem)])
    return Metric(name, direction, tuple(tiers))


def _yaml_key(identifier: str) -> str:
    """An id as a YAML key that reads back as the same string (`1.50`, `no`, `null` get quotes)."""
    return identifier if yaml.safe_load(f"{identifier}: x") == {identifier: "x"} else json.dumps(identifier)


def _check_id(kind: str, value: str, shown: str) -> None:
    if not ID_PATTERN.match(value):
        raise ConfigError([Issue(shown, value, f"{kind} {value!r} is not path-safe: expected letters, digits, '.', '_' "
                                                 "or '-', starting with a letter or digit")])


def _criteria_lines(metrics: list[Metric]) -> list[str]:
    """The criteria block; a metric without thresholds is commented out, to fill in, so that
    no made-up threshold ever judges a result."""
    live = [f"{_yaml_key(m.name)}: {m.flow()}" for m in metrics if m.tiers]
    todo = [f"{_yaml_key(m.name)}: {{target: TODO, acceptable: TODO, failure: TODO, direction: {m.direction}}}"
            for m in metrics if not m.tiers]
    note = "# set the thresholds, then uncomment (labrunner validate checks them):"
    if not live:
        return [note, "# success_criteria:", *(f"#   {line}" for line in todo)] if todo else []
    return ["success_criteria:", *(f"  {line}" for line in live), *([f"  {note}"] if todo else []),
            *(f"  # {line}" for line in todo)]


def _experiment_entry(exp_id: str, subs: list[str], metrics: list[Metric]) -> plan_edit.Entry:
    sub_flow = ", ".join(f"{_yaml_key(sub)}: {{params: {{}}}}" for sub in subs)
    criteria = ", ".join(f"{_yaml_key(m.name)}: {m.flow()}" for m in metrics if m.tiers)
    flow = (f"{{name: {json.dumps(exp_id)}, dependencies: [], success_criteria: {{{criteria}}}, "
            f"sub_experiments: {{{sub_flow}}}}}")
    block = [f"name: {json.dumps(exp_id)}", "dependencies: []  # experiments that must complete first",
             *_criteria_lines(metrics), "sub_experiments:", *(f"  {_yaml_key(sub)}: {{params: {{}}}}" for sub in subs)]
    return plan_edit.Entry(_yaml_key(exp_id), flow, tuple(block))


def _handler_text(exp_id: str, sub_id: str, handler_file: str, metrics: list[str]) -> str:
    template = string.Template((TEMPLATES / "handler.py.txt").read_text(encoding="utf-8"))
    example = ", ".join(f'"{name}": value' for name in metrics) or '"name": value'
    return template.substitute(exp=exp_id, sub=sub_id, function=default_function_names(sub_id)[0],
                               handler_file=handler_file, metrics_example=example, run_dir=sub_id)


def _experiment_plan_text(exp_id: str, subs: list[str], metrics: list[Metric]) -> str:
    template = string.Template((TEMPLATES / "experiment.md").read_text(encoding="utf-8"))
    sub_lines = "\n".join(f"- `{sub}`: ..." for sub in subs)
    criteria = "\n".join(f"- {m.name} ({m.direction} is better): why these thresholds" for m in metrics)
    return template.substitute(exp=exp_id, sub_lines=sub_lines,
                               criteria_lines=criteria or "Each criterion (metric, tiers) and why those thresholds.")


class _Edit:
    """New files and a new plan text, kept only when the edited plan validates."""

    def __init__(self, root: Path, plan_path: Path) -> None:
        self.root, self.plan_path = root, plan_path
        self.created: list[Path] = []
        self.created_folders: list[Path] = []
        self.report: list[str] = []

    def write_new(self, relative: str, text: str) -> None:
        folder = (self.root / relative).parent
        new_folder = not folder.exists()
        if _write_new(self.root, relative, text, self.report):
            self.created.append(self.root / relative)
            if new_folder:
                self.created_folders.append(folder)

    def commit(self, plan_text: str) -> None:
        """Validate the edited plan (with every handler); keep it, or undo the new files."""
        temporary = self.plan_path.with_name(f".{self.plan_path.name}.new")
        temporary.write_text(plan_text, encoding="utf-8")
        try:
            load_plan(temporary, root=self.root)
        except BaseException as exc:
            temporary.unlink(missing_ok=True)
            self._undo()
            if not isinstance(exc, PlanError):
                raise
            raise PlanError([*self._explain(exc.issues, temporary),
                             Issue(str(self.plan_path), "", "the plan would not validate after this change, "
                                                            "so nothing was changed")]) from None
        os.replace(temporary, self.plan_path)
        self.report.insert(0, f"edited {self._shown_plan()}")

    def _undo(self) -> None:
        for path in self.created:
            path.unlink(missing_ok=True)
        for folder in reversed(self.created_folders):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def _explain(self, issues: tuple[Issue, ...], temporary: Path) -> list[Issue]:
        """The problems of the edited plan: those the plan has already, with its own line
        numbers; the others marked as coming from this change."""
        try:
            load_plan(self.plan_path, root=self.root)
            before: dict[tuple[str, str], Issue] = {}
        except PlanError as exc:
            before = {(issue.key, issue.message): issue for issue in exc.issues}
        shown = str(self.plan_path)
        explained = []
        for issue in issues:
            if (issue.key, issue.message) in before:
                explained.append(before[(issue.key, issue.message)])
            elif issue.file == str(temporary):
                explained.append(Issue(shown, issue.key, f"{issue.message} (after this change)"))
            else:
                explained.append(issue)
        return explained

    def _shown_plan(self) -> str:
        try:
            return self.plan_path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(self.plan_path)


def _read_plan(plan_path: Path) -> str:
    try:
        return plan_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError.single(plan_path, "", "file not found; `labrunner init` writes one") from None


def new_experiment(root: Path, plan_path: Path, exp_id: str, subs: list[str], metrics: list[Metric]) -> list[str]:
    """Add an experiment with its subs and criteria to the plan, a handler template per sub and
    research/experiments/<exp>.md; return what was written."""
    shown = str(plan_path)
    _check_id("experiment id", exp_id, "experiment")
    for sub in subs:
        _check_id("sub-experiment id", sub, "--sub")
    if len(set(subs)) != len(subs):
        raise ConfigError([Issue("--sub", ", ".join(subs), "each sub-experiment id once")])
    text = _read_plan(plan_path)
    top = plan_edit.compose(text, shown)
    if plan_edit.child_node(top, "experiments") is None:
        text += ("" if text.endswith("\n") or not text else "\n") + "experiments:\n"
        top = plan_edit.compose(text, shown)
    key_node, experiments = plan_edit.child_node(top, "experiments")  # type: ignore[misc]
    if exp_id in plan_edit.mapping_keys(experiments):
        line = next(k.start_mark.line + 1 for k, _ in experiments.value if str(k.value) == exp_id)
        raise PlanError.single(shown, f"experiments.{exp_id}", "already exists; add a sub with "
                               f"`labrunner new sub {exp_id} SUB`", line)
    edit = _Edit(root, plan_path)
    for sub in subs:
        handler_file = f"handlers/{exp_id}/{sub}.py"
        edit.write_new(handler_file, _handler_text(exp_id, sub, handler_file, [m.name for m in metrics]))
    edit.write_new(f"research/experiments/{exp_id}.md", _experiment_plan_text(exp_id, subs, metrics))
    edit.commit(plan_edit.add_entry(text, shown, key_node, experiments, _experiment_entry(exp_id, subs, metrics)))
    edit.report.append(f"next:  write the experiment in handlers/{exp_id}/, then `labrunner validate` and `snakemake -n`")
    return edit.report


def _ids_in(node: yaml.Node | None) -> list[str]:
    """The ids a sub_experiments value lists: mapping keys, or the items of a list."""
    if isinstance(node, yaml.SequenceNode):
        return [str(item.value) if isinstance(item, yaml.ScalarNode) else "".join(plan_edit.mapping_keys(item))
                for item in node.value]
    return plan_edit.mapping_keys(node) if node is not None else []


def _scalar(node: yaml.Node | None, key: str) -> str | None:
    found = plan_edit.child_node(node, key) if node is not None else None
    return str(found[1].value) if found and isinstance(found[1], yaml.ScalarNode) and found[1].value else None


def new_sub(root: Path, plan_path: Path, exp_id: str, sub_id: str) -> list[str]:
    """Add a sub to an experiment of the plan, with its handler template. The plan is read as
    text, not validated first: adding the missing sub is how a plan with an empty experiment
    gets valid; the edited plan must validate."""
    shown = str(plan_path)
    _check_id("sub-experiment id", sub_id, "sub")
    text = _read_plan(plan_path)
    experiments = plan_edit.child_node(plan_edit.compose(text, shown), "experiments")
    found = plan_edit.child_node(experiments[1], exp_id) if experiments else None
    if found is None:
        known = plan_edit.mapping_keys(experiments[1]) if experiments else []
        close = difflib.get_close_matches(exp_id, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise PlanError.single(shown, "experiments", f"unknown experiment {exp_id!r}; {hint}"
                               f"experiments: {', '.join(known) or 'none yet (labrunner new experiment ID --sub SUB)'}")
    parent_key, parent = found
    subs = plan_edit.child_node(parent, "sub_experiments")
    if sub_id in _ids_in(subs[1] if subs else None):
        raise PlanError.single(shown, f"experiments.{exp_id}.sub_experiments.{sub_id}", "already exists",
                               subs[1].start_mark.line + 1 if subs else None)
    entry = plan_edit.Entry(_yaml_key(sub_id), "{params: {}}")
    if subs is None:  # an experiment with no sub_experiments key yet
        entry = plan_edit.Entry("sub_experiments", f"{{{entry.key}: {entry.flow}}}", (f"{entry.key}: {entry.flow}",))
    else:
        parent_key, parent = subs
    handlers_dir = _scalar(found[1], "handlers") or f"handlers/{exp_id}"
    handler_file = f"{handlers_dir.rstrip('/')}/{sub_id}.py"
    criteria = plan_edit.child_node(found[1], "success_criteria")
    edit = _Edit(root, plan_path)
    edit.write_new(handler_file, _handler_text(exp_id, sub_id, handler_file,
                                               plan_edit.mapping_keys(criteria[1]) if criteria else []))
    edit.commit(plan_edit.add_entry(text, shown, parent_key, parent, entry))
    edit.report.append(f"next:  write the experiment in {handler_file}, then `labrunner validate`")
    return edit.report
