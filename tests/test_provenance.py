"""Unit tests for labrunner.provenance through real runs: the commit and a dirty tree with its patch
(applied to a clean checkout, it gives back the code the run ran), the hashes of the handler and
the modules it imports, and the versions the handler's own process reports."""

from __future__ import annotations

import hashlib
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import EXP, SUB, ProjectFactory, RunHandler, one_sub_plan, write
from labrunner.records import read_record

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

HANDLER = """\
from handlers.common import scale


def s1(runner):
    return {"finding": "ok", "metrics": {"acc": scale(0.4)}}
"""


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=root,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def repo(make_project: ProjectFactory) -> Path:
    """A project committed to git: the plan, the handler and the module it imports."""
    root = make_project(one_sub_plan(), {"handlers/__init__.py": "", "handlers/common.py": "def scale(x):\n    return 2 * x\n",
                                         f"handlers/{EXP}/{SUB}.py": HANDLER})
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    return root


def test_provenance_clean_tree_records_its_commit_and_no_patch(repo: Path, run_handler: RunHandler) -> None:
    outcome = run_handler(HANDLER, root=repo)

    record = read_record(outcome.paths.result)
    assert record["git"] == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False}
    assert not list(outcome.paths.history.glob("*.diff"))


def test_provenance_dirty_tree_is_detected_and_its_patch_gives_back_the_code(repo: Path, run_handler: RunHandler,
                                                                            tmp_path: Path) -> None:
    # a tracked file, edited, in another encoding than UTF-8: the patch must keep its bytes
    (repo / "handlers" / "common.py").write_bytes(b"# -*- coding: latin-1 -*-\n# caf\xe9\ndef scale(x):\n    return 3 * x\n")
    write(repo / "handlers" / "extra.py", "OFFSET = 0.01\n")  # a new module, not committed
    handler = HANDLER.replace("from handlers.common import scale", "from handlers.common import scale\nfrom handlers.extra import OFFSET")

    outcome = run_handler(handler, root=repo)  # the handler file itself is edited too

    record = read_record(outcome.paths.result)
    state = record["git"]
    assert state["commit"] == git(repo, "rev-parse", "HEAD") and state["dirty"] is True
    assert state["untracked"] == ["handlers/extra.py"]
    patch = repo / state["diff"]
    assert patch.parent == outcome.paths.history and patch.name.startswith("tree-")
    clean = tmp_path / "clean"
    git(tmp_path, "clone", "-q", str(repo), str(clean))
    git(clean, "apply", str(patch))
    for relative in ("handlers/common.py", "handlers/extra.py", f"handlers/{EXP}/{SUB}.py"):
        assert (clean / relative).read_bytes() == (repo / relative).read_bytes(), relative


def test_provenance_code_hashes_cover_the_handler_and_every_module_it_imports(repo: Path, run_handler: RunHandler) -> None:
    outcome = run_handler(HANDLER, root=repo)

    code = read_record(outcome.paths.result)["code"]
    expected = {path: hashlib.sha256((repo / path).read_bytes()).hexdigest()
                for path in ("handlers/__init__.py", "handlers/common.py", f"handlers/{EXP}/{SUB}.py")}
    assert code == expected


def test_provenance_environment_is_what_the_handler_imported(run_handler: RunHandler) -> None:
    import numpy
    import torch

    plain = run_handler('def s1(runner):\n    return {"finding": "ok", "metrics": {"a": 1}}\n')
    environment = read_record(plain.paths.result)["environment"]
    assert environment == {"python": platform.python_version(), "host": platform.node()}

    with_torch = run_handler('import numpy, torch\n\n\ndef s1(runner):\n    return {"finding": "ok", "metrics": {"a": 1}}\n',
                             root=plain.paths.run_dir.parents[2])
    environment = read_record(with_torch.paths.result)["environment"]
    assert (environment["numpy"], environment["torch"]) == (numpy.__version__, torch.__version__)
    assert environment["cuda"] == torch.version.cuda
    assert ("gpu_name" in environment) == torch.cuda.is_available()


def test_provenance_a_handler_that_dies_leaves_the_supervisors_environment(run_handler: RunHandler) -> None:
    outcome = run_handler("import os, signal\n\n\ndef s1(runner):\n    os.kill(os.getpid(), signal.SIGKILL)\n")

    environment = read_record(outcome.paths.failure)["environment"]
    assert environment == {"python": platform.python_version(), "host": platform.node(), "reported_by": "supervisor"}
    assert read_record(outcome.paths.failure)["git"] == {"commit": None, "dirty": None}
