"""Helpers for the workflow tests: a tiny project next to the repo's Snakefile, and Snakemake runs.

Handlers fail on purpose through a flag file that is not an input of any rule, so a "transient"
failure changes nothing Snakemake can see.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

PLAN = """\
project: {name: Tiny, hypothesis: "b beats a"}
wandb: {mode: disabled}
defaults: {timeout_min: 2}
experiments:
  e1-tiny:
    name: "E1: tiny"
    type: claim
    success_criteria:
      acc: {target: 0.9, acceptable: 0.8, failure: 0.5}
      loss: {target: 0.1, acceptable: 0.2, failure: 0.4, direction: lower}
    sub_experiments:
      a: {params: {acc: 0.85, loss: 0.3}}
      b: {params: {acc: 0.95, loss: 0.05}}
      c: {params: {acc: 0.7, loss: 0.5}}
  e2-next:
    dependencies: [e1-tiny]
    success_criteria:
      acc: {target: 0.9, acceptable: 0.8}
    sub_experiments: [d]
gates:
  g1: {name: "Gate 1", experiments: [e1-tiny], unlocks: "phase 2"}
"""

HANDLER = '''\
import os
from pathlib import Path
from handlers.helpers import scale


def {name}(runner):
    flag = Path(os.environ["TINY_FLAGS"]) / "{name}.fail"
    runner.log_metrics({{"acc": runner.params["acc"] / 2}}, step=0)
    if flag.exists():
        raise RuntimeError("flaky failure of {name}: " + flag.read_text())
    path = runner.results.save_artifact("note.txt", "sub {name}")
    acc = scale(runner.params["acc"])
    return {{"finding": "{name} reaches " + str(acc), "metrics": {{"acc": acc, "loss": runner.params.get("loss", 0.0)}},
            "artifacts": [path]}}
'''


def write_project(root: Path, plan: str = PLAN) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for item in ("Snakefile", "profiles"):
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / item)
    (root / "research").mkdir(exist_ok=True)
    (root / "research" / "research_plan.yaml").write_text(plan)
    handlers = root / "handlers"
    (handlers / "e1-tiny").mkdir(parents=True, exist_ok=True)
    (handlers / "e2-next").mkdir(parents=True, exist_ok=True)
    (handlers / "helpers.py").write_text("def scale(x):\n    return x\n")
    (handlers / "other.py").write_text("def unused():\n    return 1\n")
    for name in ("a", "b"):
        (handlers / "e1-tiny" / f"{name}.py").write_text(HANDLER.format(name=name))
    # c imports one more helper, so that editing it reruns c alone
    (handlers / "e1-tiny" / "c.py").write_text(HANDLER.format(name="c").replace(
        "from handlers.helpers import scale", "from handlers.helpers import scale\nfrom handlers.other import unused"))
    (handlers / "e2-next" / "d.py").write_text(HANDLER.format(name="d").replace(
        'runner.params["acc"]', 'runner.params.get("acc", 0.9)'))
    (root / "flags").mkdir(exist_ok=True)
    return root


def project_env(project: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "TINY_FLAGS": str(project / "flags"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "WANDB_MODE": "disabled", **extra}


def snakemake(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "snakemake"), *args], cwd=project, env=project_env(project, **env),
                          capture_output=True, text=True, timeout=300)


def run(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return snakemake(project, "--cores", "2", *args, **env)


def planned_subs(project: Path, *args: str) -> list[str]:
    """The run_sub jobs a dry run would start, as "exp/run"."""
    done = snakemake(project, "-n", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = []
    for block in done.stdout.split("rule ")[1:]:
        if block.startswith("run_sub:"):
            match = re.search(r"wildcards: exp=([^,\s]+), run=(\S+)", block)
            assert match, block
            jobs.append(f"{match[1]}/{match[2]}")
    return sorted(jobs)


def edit(path: Path) -> None:
    """A real edit: Snakemake ignores a new mtime when the content is the same."""
    path.write_text(path.read_text() + "\n# edited\n")


def fail_next(project: Path, sub: str, message: str = "boom") -> None:
    (project / "flags" / f"{sub}.fail").write_text(message)


def heal(project: Path, sub: str) -> None:
    (project / "flags" / f"{sub}.fail").unlink()


def load(path: Path) -> dict:
    with path.open() as handle:
        text = handle.read()
    return yaml.safe_load(text.split("# labrunner-sha256:")[0])




def outside_markers(data: bytes) -> list[bytes]:
    return re.split(rb"<!-- labrunner:begin [\w-]+ -->.*?<!-- labrunner:end [\w-]+ -->", data, flags=re.S)


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}
