"""The workflow on a real SLURM cluster: a single node on this machine, started by
tests/slurm/start-cluster.sh (root; it installs the Debian packages when they are missing), and
Snakemake's SLURM executor plugin. Every sub is a SLURM job; the aggregates run here.

Skipped, with the reason, where the cluster cannot be had (not root, no apt-get, the packages do
not install); with LABRUNNER_REQUIRE_SLURM=1 (CI sets it) that is a failure instead.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflow_support import BIN, PLAN, REPO, fail_next, load, planned_subs, project_env, snakemake, write_project

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

SLURM_DIR = Path(__file__).parent / "slurm"
LINGER = SLURM_DIR / "linger"  # on PYTHONPATH: holds a `labrunner run` back after its records (see there)
# The README's command line, with the two settings that keep the test fast: the status command
# (no accounting database here: sacct would never answer) and a 1 s wait before the first check.
TARGET = "research/FINDINGS.md"
SLURM_ARGS = ("--executor", "slurm", "--jobs", "4", "--slurm-status-command", "squeue",
              "--slurm-init-seconds-before-status-checks", "1", "--default-resources", "slurm_account=none")
STATUS_ARGS = ("--slurm-status-command", "--slurm-init-seconds-before-status-checks")  # the README explains them
# every sub asks for memory; c more, and more time
SLURM_PLAN = (PLAN.replace("defaults: {timeout_min: 2}", "defaults: {timeout_min: 2, mem_mb: 600}")
              .replace("c: {params: {acc: 0.7, loss: 0.5}}", "c: {params: {acc: 0.7, loss: 0.5}, timeout_min: 4, mem_mb: 700}"))
WAIT_S = 120.0


def _unavailable(reason: str) -> None:
    if os.environ.get("LABRUNNER_REQUIRE_SLURM") == "1":
        pytest.fail(f"the SLURM tests must run here (LABRUNNER_REQUIRE_SLURM=1), but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[None]:
    """The cluster for this module: started if it is not running, and then stopped again."""
    if os.geteuid() != 0:
        _unavailable("needs root: tests/slurm/start-cluster.sh installs Debian packages and runs the SLURM daemons")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        _unavailable("snakemake-executor-plugin-slurm is not installed (pip install -e '.[dev]')")
    started = subprocess.run(["bash", str(SLURM_DIR / "start-cluster.sh")], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        _unavailable(f"no SLURM cluster: start-cluster.sh failed:\n{started.stdout}{started.stderr}")
    ours = "already running" not in started.stdout
    yield
    if ours:
        stopped = subprocess.run(["bash", str(SLURM_DIR / "stop-cluster.sh")], capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def slurm(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return snakemake(project, TARGET, *SLURM_ARGS, *args)


def slurm_job_ids(output: str) -> dict[str, str]:
    """exp/sub -> the SLURM job id Snakemake submitted it as, from Snakemake's output."""
    return {f"{exp}/{sub}": job for exp, sub, job in
            re.findall(r"slurm_logs/rule_run_sub/([^_/\s]+)_([^/\s]+)/(\d+)\.log", output)}


def squeue(job_ids: list[str], fields: str) -> dict[str, list[str]]:
    """Job id -> the squeue fields of finished jobs too (kept for MinJobAge, 5 min here)."""
    done = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", f"%i {fields}"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()}


def node_name() -> str:
    return subprocess.run(["sinfo", "-h", "-o", "%N"], capture_output=True, text=True, timeout=30).stdout.strip()


def wait_for(path: Path, process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + WAIT_S
    while not (path.exists() and path.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.communicate()[0] if process.poll() is not None else "(still running)"
            raise AssertionError(f"{path.name} never came; snakemake said:\n{output[-4000:]}")
        time.sleep(0.1)
    return path.read_text()


def scancel(job_id: str) -> None:
    done = subprocess.run(["scancel", job_id], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The workflow tests' tiny project, its handlers also telling their SLURM job id
    (flags/<sub>.job) and waiting while flags/<sub>.hang exists."""
    root = write_project(tmp_path / "proj", SLURM_PLAN)
    for handler in (root / "handlers").glob("e*/*.py"):
        name = handler.stem
        handler.write_text(handler.read_text().replace("import os\n", "import os\nimport time\n").replace(
            '.fail"\n',
            f'.fail"\n    (flag.parent / "{name}.job").write_text(os.environ.get("SLURM_JOB_ID", ""))\n'
            f'    while (flag.parent / "{name}.hang").exists():\n        time.sleep(0.1)\n', 1))
    return root


def test_slurm_readme_command_line_is_the_tested_one() -> None:
    section = (REPO / "README.md").read_text().split("## Beyond one machine")[1].split("\n## ")[0]
    line = next(line for line in section.splitlines() if line.startswith("snakemake    research/FINDINGS.md"))
    words = shlex.split(line)
    assert words[:4] == ["snakemake", TARGET, "--executor", "slurm"]  # the target first
    tested_options = [word for word in SLURM_ARGS if word.startswith("--") and word not in STATUS_ARGS]
    assert [word for word in words if word.startswith("--")] == tested_options
    assert all(option in section for option in STATUS_ARGS)


def test_slurm_target_after_default_resources_is_an_error(tmp_path: Path) -> None:
    pytest.importorskip("snakemake_executor_plugin_slurm")
    project = write_project(tmp_path / "proj")
    after = snakemake(project, "-n", *SLURM_ARGS, TARGET)
    assert after.returncode != 0 and "ValueError" in after.stdout + after.stderr
    first = snakemake(project, "-n", TARGET, *SLURM_ARGS)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]


def test_slurm_every_sub_is_a_slurm_job_and_one_run_converges(slurm_cluster: None, project: Path) -> None:
    dry = slurm(project, "-n")
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    # the plan's timeout_min (plus the margin) and mem_mb, as the dry run shows them
    assert re.search(r"wildcards: exp=e1-tiny, run=c\n\s+resources: .*mem_mb=700.*runtime=8", dry.stdout), dry.stdout

    done = slurm(project)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    jobs = slurm_job_ids(output)
    assert sorted(jobs) == ["e1-tiny/a", "e1-tiny/b", "e1-tiny/c", "e2-next/d"], output[-3000:]
    node = node_name()
    for key, job_id in jobs.items():
        exp, sub = key.split("/")
        record = load(project / "results" / exp / sub / "result.yaml")
        assert record["status"] == "completed"
        assert record["executor"] == {"name": "slurm", "job_id": job_id, "node": node}
        assert (project / "flags" / f"{sub}.job").read_text() == job_id  # the handler ran inside that job
    # what SLURM was asked for: time limit (minutes:seconds) and memory from the plan
    asked = squeue(list(jobs.values()), "%T %l %m")
    assert asked[jobs["e1-tiny/c"]] == ["COMPLETED", "8:00", "700M"]
    assert asked[jobs["e1-tiny/a"]] == ["COMPLETED", "6:00", "600M"]

    findings = (project / "research" / "experiments" / "e1-tiny" / "FINDINGS.md").read_text()
    assert f"| slurm job {jobs['e1-tiny/a']} on {node} |" in findings
    assert "Completed: 4  Failed: 0  Pending: 0  Held: 0  Skipped: 0" in output
    again = slurm(project, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


def test_slurm_failure_cancel_and_discarded_result_are_recorded_then_rerun(slurm_cluster: None, project: Path) -> None:
    flags = project / "flags"
    fail_next(project, "b", "first")
    (flags / "a.hang").touch()  # a runs until it is cancelled
    (flags / "c.linger").touch()  # c is cancelled as it finishes, its result written
    env = project_env(project, PYTHONPATH=str(LINGER))
    run = subprocess.Popen([str(BIN / "snakemake"), TARGET, *SLURM_ARGS], cwd=project, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        job_a = wait_for(flags / "a.job", run)
        scancel(job_a)
        job_c = wait_for(flags / "c.finished", run)
        assert load(project / "results" / "e1-tiny" / "c" / "result.yaml")["status"] == "completed"
        scancel(job_c)
        output, _ = run.communicate(timeout=WAIT_S)
    finally:
        for name in ("a.hang", "c.linger"):  # whatever happened, the handlers may end
            (flags / name).unlink(missing_ok=True)
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode != 0, output[-3000:]
    results = project / "results" / "e1-tiny"

    failed = load(results / "b" / "failure.yaml")
    assert failed["error"]["type"] == "RuntimeError" and failed["executor"]["name"] == "slurm"
    cancelled = load(results / "a" / "failure.yaml")
    assert cancelled["error"]["type"] == "Terminated", cancelled["error"]
    assert "SIGTERM" in cancelled["error"]["message"] and cancelled["executor"]["job_id"] == job_a
    # Snakemake deleted c's complete result (its job ended CANCELLED): a record says so
    assert not (results / "c" / "result.yaml").exists()
    missing = load(results / "c" / "failure.yaml")
    assert missing["status"] == "failed" and missing["error"]["type"] == "ResultMissing"
    assert f"written by SLURM job {job_c}" in missing["error"]["message"]
    assert (project / missing["missing_result"]["kept"]).is_file()
    assert f"sacct -j {job_c}" in missing["error"]["hint"]
    status = subprocess.run([str(BIN / "labrunner"), "status"], cwd=project, capture_output=True, text=True)
    for sub, state in (("a", "interrupted"), ("b", "failed"), ("c", "interrupted")):
        assert re.search(rf"e1-tiny\s+{sub}\s+{state}", status.stdout), status.stdout
    assert "Terminated:" in status.stdout and "ResultMissing:" in status.stdout
    assert "RuntimeError: flaky failure of b" in status.stdout and "Failed: 3" in status.stdout

    (flags / "b.fail").unlink()
    assert planned_subs(project) == ["e1-tiny/a", "e1-tiny/b", "e1-tiny/c", "e2-next/d"]
    done = slurm(project)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    for sub, error_type in (("a", "Terminated"), ("b", "RuntimeError"), ("c", "ResultMissing")):
        assert load(results / sub / "result.yaml")["executor"]["name"] == "slurm"
        assert load(results / sub / "failure.yaml")["last_failure"]["error"]["type"] == error_type
    again = slurm(project, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]
