"""Fault injection through real Snakemake runs: interrupts, kills, damaged files, concurrency,
secrets. Each test injects the real fault and checks that nothing is lost and the next run
finishes the job (see docs/reliability.md for the list)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from labrunner.errors import RecordError
from labrunner.records import read_record
from conftest import MountFactory
from workflow_support import BIN, PLAN, load, planned_subs, project_env, run, snakemake, write_project

pytestmark = pytest.mark.slow

SLOW_HANDLER = '''\
import os
import time
from pathlib import Path


def run(runner):
    runner.log_metrics({"started": 1.0}, step=0)
    print("working", flush=True)
    slow = Path(os.environ["TINY_FLAGS"]) / "slow"  # sleeps up to its number of seconds, while it exists
    deadline = time.monotonic() + (float(slow.read_text()) if slow.exists() else 0)
    while slow.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return {"finding": "done", "metrics": {"acc": 0.9}}
'''


def slow_project(root: Path, wandb_mode: str = "disabled") -> Path:
    plan = PLAN.replace("wandb: {mode: disabled}", f"wandb: {{mode: {wandb_mode}}}")
    project = write_project(root, plan)
    for name in ("a", "b", "c"):
        (project / "handlers" / "e1-tiny" / f"{name}.py").write_text(SLOW_HANDLER)
    return project


def start(project: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """Snakemake in its own process group, as a terminal runs it (Ctrl-C goes to the group)."""
    return subprocess.Popen([str(BIN / "snakemake"), "--cores", "2", *args], cwd=project, env=project_env(project, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_until_working(project: Path, count: int, timeout_s: float = 60.0) -> list[str]:
    """Wait until `count` handlers have printed their first line; return their sub ids."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        working = [sub for sub in ("a", "b", "c")
                   if "working" in _text(project / "results" / "e1-tiny" / sub / "run.log")]
        if len(working) >= count:
            return working
        time.sleep(0.2)
    raise AssertionError(f"handlers did not start within {timeout_s}s")


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def assert_no_complete_looking_result(project: Path) -> None:
    for result in (project / "results").rglob("result.yaml"):
        read_record(result)  # raises RecordError if anything half-written were there


def test_fault_ctrl_c_records_interrupts_and_the_next_run_finishes(tmp_path: Path) -> None:
    project = slow_project(tmp_path / "proj", wandb_mode="offline")
    (project / "flags" / "slow").write_text("60")
    process = start(project, WANDB_MODE="offline")
    working = wait_until_working(project, 2)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    output, _ = process.communicate(timeout=90)
    assert process.returncode != 0

    assert_no_complete_looking_result(project)
    for sub in working:
        assert not (project / "results" / "e1-tiny" / sub / "result.yaml").exists()
        failure = load(project / "results" / "e1-tiny" / sub / "failure.yaml")
        assert failure["error"]["type"] == "Interrupted", failure
        assert failure["wandb"]["mode"] == "offline" and failure["wandb"]["id"]  # the W&B run was closed
        assert failure["metrics_logged"]["count"] == 1

    (project / "flags" / "slow").unlink()
    done = run(project)  # no --rerun-incomplete typed: the profile has it
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert planned_subs(project) == []


def test_fault_sigterm_to_snakemake_lets_running_subs_finish(tmp_path: Path) -> None:
    project = slow_project(tmp_path / "proj")
    (project / "flags" / "slow").write_text("4")
    process = start(project)
    working = wait_until_working(project, 2)
    process.send_signal(signal.SIGTERM)  # to Snakemake alone: it starts nothing new
    process.communicate(timeout=90)

    for sub in working:
        assert load(project / "results" / "e1-tiny" / sub / "result.yaml")["status"] == "completed"
    not_started = {"a", "b", "c"} - set(working)  # --cores 2: the third sub was waiting for a free core
    assert len(not_started) == 1, f"all three subs were running: {working}"
    (waiting,) = not_started
    waiting_dir = project / "results" / "e1-tiny" / waiting
    assert not (waiting_dir / "run.log").exists() and not (waiting_dir / "result.yaml").exists(), f"{waiting} started after the SIGTERM"
    assert not (project / "results" / "e2-next" / "d").exists()  # the write-up is there, no run of d
    assert_no_complete_looking_result(project)
    (project / "flags" / "slow").unlink()
    assert run(project).returncode == 0
    assert planned_subs(project) == []


def test_fault_job_killed_outright_reruns_next_time_as_lost(tmp_path: Path) -> None:
    project = slow_project(tmp_path / "proj")
    (project / "flags" / "slow").write_text("60")
    process = start(project)
    working = wait_until_working(project, 2)
    victim = working[0]
    supervisor = _labrunner_run_pid(project, victim)
    os.kill(supervisor, signal.SIGKILL)  # the OOM killer, say: nothing gets to write anything
    assert load(project / "results" / "e1-tiny" / victim / "failure.yaml")["status"] == "running"
    assert _handler_gone(project, victim)  # the handler died with its supervisor
    (project / "flags" / "slow").unlink()  # the other subs finish
    process.communicate(timeout=120)
    assert process.returncode != 0  # the killed sub is a failed job
    assert not (project / "results" / "e1-tiny" / victim / "result.yaml").exists()

    assert planned_subs(project) == [f"e1-tiny/{victim}", "e2-next/d"]
    done = run(project)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    failure = load(project / "results" / "e1-tiny" / victim / "failure.yaml")
    assert failure["status"] == "resolved" and failure["last_failure"]["error"]["type"] == "Lost"


def _processes() -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
    return found


def _labrunner_run_pid(project: Path, sub: str) -> int:
    """The supervisor of `sub` in this project (other tests, or other checkouts, may run the same)."""
    pids = [pid for pid, cmd in _processes().items()
            if f"labrunner run e1-tiny {sub} " in cmd and "/bin/sh" not in cmd and _cwd(pid) == project.resolve()]
    assert len(pids) == 1, pids
    return pids[0]


def _cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def _handler_gone(project: Path, sub: str, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [cmd for cmd in _processes().values() if "labrunner.worker" in cmd and f"{project.resolve()}/results/e1-tiny/{sub}/" in cmd]
        if not alive:
            return True
        time.sleep(0.2)
    return False


def test_fault_damaged_result_is_named_and_rebuilt(tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj")
    assert run(project).returncode == 0
    truncated = project / "results" / "e1-tiny" / "a" / "result.yaml"
    truncated.write_text(truncated.read_text()[:40])
    edited = project / "results" / "e1-tiny" / "b" / "result.yaml"
    edited.write_text(edited.read_text().replace("acc: 0.95", "acc: 0.99"))

    done = run(project)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "results/e1-tiny/a/result.yaml is damaged (it has no checksum line" in done.stderr
    assert "results/e1-tiny/b/result.yaml is damaged (its checksum does not match" in done.stderr
    for sub in ("a", "b"):
        assert read_record(project / "results" / "e1-tiny" / sub / "result.yaml")["status"] == "completed"
        kept = list((project / "results" / "e1-tiny" / sub / "history").glob("*-damaged-result.yaml"))
        assert len(kept) == 1  # the damaged file is kept, not deleted
    with pytest.raises(RecordError, match="damaged"):
        read_record(kept[0])
    assert planned_subs(project) == []


CONCURRENT_HANDLER = '''\
import os
import time
from pathlib import Path


def run(runner):
    me = f"{runner.sub_id}/{runner.seed}"
    flags = Path(os.environ["TINY_FLAGS"])
    (flags / f"started-{runner.sub_id}-{runner.seed}").touch()
    deadline = time.monotonic() + 60  # wait for every run, so that all of them write at the same time
    while len(list(flags.glob("started-*"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    peers = len(list(flags.glob("started-*")))
    for step in range(200):
        runner.log_metrics({"who": float(ord(runner.sub_id) * 10 + runner.seed), "step_value": float(step)}, step=step)
        runner.results.save_artifact("shared-name.txt", me * 1000)
        runner.results.save_json_artifact(f"plots/{step % 5}.json", {"who": me, "step": step})
    return {"finding": "wrote " + me, "metrics": {"acc": 0.9, "peers": peers}}
'''


def test_fault_concurrent_subs_do_not_mix_files(tmp_path: Path) -> None:
    # four runs at once, two of them seeds of one sub (their folders share a parent), all writing
    # the same file names, each told apart by what only it writes
    plan = PLAN.replace("a: {params: {acc: 0.85, loss: 0.3}}", "a: {params: {acc: 0.85, loss: 0.3}, seeds: [0, 1]}")
    project = write_project(tmp_path / "proj", plan)
    for name in ("a", "b", "c"):
        (project / "handlers" / "e1-tiny" / f"{name}.py").write_text(CONCURRENT_HANDLER)
    done = snakemake(project, "--cores", "4")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = {"a/0": "a/seed-0", "a/1": "a/seed-1", "b/0": "b", "c/0": "c"}
    for me, folder in runs.items():
        run_dir = project / "results" / "e1-tiny" / folder
        record = read_record(run_dir / "result.yaml")
        assert (record["sub"], record["seed"], record["finding"]) == (me.split("/")[0], int(me.split("/")[1]), f"wrote {me}")
        assert record["metrics"]["peers"] == 4, "the runs did not overlap: nothing was tested"
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert len(lines) == 200
        assert {line["run"] for line in lines} == {record["run_id"]}
        assert {line["metrics"]["who"] for line in lines} == {float(ord(me[0]) * 10 + int(me[-1]))}
        assert (run_dir / "artifacts" / "shared-name.txt").read_text() == me * 1000
        plots = sorted((run_dir / "artifacts" / "plots").iterdir())
        assert len(plots) == 5 and all(json.loads(p.read_text())["who"] == me for p in plots)
    assert not [path for path in (project / "results").rglob("*") if path.name.endswith(".tmp")]  # none left behind


SECRET_HANDLER = '''\
import os


def run(runner):
    key = os.environ["WANDB_API_KEY"]
    print("the key is", key, "and the modal token is", os.environ["MODAL_TOKEN_SECRET"], flush=True)
    runner.log_metrics({"x": 1.0})
    raise RuntimeError(f"could not authenticate with {key} / {os.environ['MODAL_TOKEN_ID']}")
'''


def test_fault_secrets_are_never_written(tmp_path: Path) -> None:
    project = slow_project(tmp_path / "proj", wandb_mode="offline")
    (project / "handlers" / "e1-tiny" / "a.py").write_text(SECRET_HANDLER)
    values = {"WANDB_API_KEY": secrets.token_hex(20), "MODAL_TOKEN_ID": "ak-" + secrets.token_hex(10),
              "MODAL_TOKEN_SECRET": "as-" + secrets.token_hex(10)}
    done = run(project, WANDB_MODE="offline", **values)
    assert done.returncode != 0
    console = done.stdout + done.stderr
    assert "RuntimeError: could not authenticate with *** / ***" in console  # the message did reach the console
    for name, value in values.items():
        assert value not in console, f"{name} printed"
    written = [path for path in project.rglob("*") if path.is_file()]
    assert any(path.name == "failure.yaml" for path in written) and any("wandb" in path.parts for path in written)
    for path in written:
        data = path.read_bytes()
        for name, value in values.items():
            assert value.encode() not in data, f"{name} written to {path}"


def _pem_key() -> str:
    """A private key as it sits in an environment variable: PEM lines of 64 characters."""
    import base64

    body = base64.b64encode(secrets.token_bytes(48 * 5 + 6)).decode()  # 5 full lines and one of 8
    lines = [body[start:start + 64] for start in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN OPENSSH PRIVATE KEY-----", *lines, "-----END OPENSSH PRIVATE KEY-----", ""])


LEAKY_HANDLER = '''\
import json
import os
import sys


def {name}(runner):
    token, password, key = os.environ["HF_TOKEN"], os.environ["DB_PASSWORD"], os.environ["DEPLOY_PRIVATE_KEY"]
    print("token", token, "password", password, flush=True)
    print("escaped:", json.dumps(token), repr(token), json.dumps({{"key": key}}), repr(key), flush=True)
    print(key, file=sys.stderr, flush=True)  # line by line into run.log
    runner.log_metrics({{"acc": 0.5}}, step=0)
    if {fail}:
        raise RuntimeError(f"auth failed: token={{token!r}} password={{password}} key={{key}}")
    return {{"finding": f"used token {{token}} and password {{password}}", "metrics": {{"acc": 0.9}},
            "key_used": key, "token_json": json.dumps(token)}}
'''


def test_fault_secrets_printed_raised_and_returned_reach_no_file_and_no_console(tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj")
    # b succeeds (so that its experiment's aggregates and FINDINGS are written); d, after it, fails
    (project / "handlers" / "e1-tiny" / "b.py").write_text(LEAKY_HANDLER.format(name="b", fail=False))
    (project / "handlers" / "e2-next" / "d.py").write_text(LEAKY_HANDLER.format(name="d", fail=True))
    key = _pem_key()
    env = {"HF_TOKEN": f'hf_{secrets.token_hex(12)}"q\\{secrets.token_hex(6)}',  # a quote and a backslash inside
           "DB_PASSWORD": "Pw" + "".join(secrets.choice("ghjkmnpqrstvwxyz") for _ in range(4)) + "!",  # short: 7 chars
           "DEPLOY_PRIVATE_KEY": key}
    done = run(project, **env)
    assert done.returncode != 0  # d failed

    console = done.stdout + done.stderr
    # everything the handlers leaked did reach the console and the records, masked
    assert "b: completed in" in console and "used token *** and password ***" in console
    assert "error: RuntimeError: auth failed: token='***' password=*** key=***" in console
    assert "[e2-next/d] token *** password ***" in console
    run_log = (project / "results" / "e1-tiny" / "b" / "run.log").read_text()
    assert run_log.count("***\n") >= len(key.splitlines())  # the key, a line at a time
    assert load(project / "results" / "e1-tiny" / "b" / "result.yaml")["finding"] == "used token *** and password ***"
    assert "used token *** and password ***" in (project / "research" / "experiments" / "e1-tiny" / "FINDINGS.md").read_text()

    forbidden = {"HF_TOKEN": env["HF_TOKEN"], "HF_TOKEN as JSON": json.dumps(env["HF_TOKEN"])[1:-1],
                 "HF_TOKEN as repr": repr(env["HF_TOKEN"])[1:-1], "DB_PASSWORD": env["DB_PASSWORD"],
                 "the key as JSON": json.dumps(key)[1:-1]}
    forbidden.update({f"line {number} of the key": line for number, line in enumerate(key.splitlines(), 1)})
    for what, value in forbidden.items():
        assert value not in console, f"{what} printed"
    written = [path for path in project.rglob("*") if path.is_file()]
    assert len(written) > 30  # records, logs, history, aggregates, FINDINGS, Snakemake's own files
    for path in written:
        data = path.read_bytes()
        for what, value in forbidden.items():
            assert value.encode() not in data, f"{what} written to {path}"


def _run_with_umask(project: Path, umask: int) -> subprocess.CompletedProcess[str]:
    command = ["sh", "-c", f'umask {umask:03o} && exec "$0" "$@"', str(BIN / "snakemake"), "--cores", "2"]
    return subprocess.run(command, cwd=project, env=project_env(project), capture_output=True, text=True, timeout=300)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_fault_written_files_follow_the_umask_keep_their_mode_and_symlinks(tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj")
    done = _run_with_umask(project, 0o002)  # a group that shares results
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    written = [path for folder in ("results", "research") for path in (project / folder).rglob("*")
               if path.is_file() and path.name != "research_plan.yaml"]
    names = {path.name for path in written}
    assert {"result.yaml", "failure.yaml", "run.log", "metrics.jsonl", "note.txt", "results.yaml", "metrics.md",
            "criteria.png", "gates.yaml", "FINDINGS.md", "aggregate.log"} <= names
    assert any(path.parent.name == "history" for path in written)
    assert {str(path.relative_to(project)): oct(_mode(path)) for path in written if _mode(path) != 0o664} == {}

    findings = project / "research" / "experiments" / "e1-tiny" / "FINDINGS.md"
    findings.chmod(0o640)  # the researcher's choice
    project_findings = project / "research" / "FINDINGS.md"
    kept_elsewhere = project / "notes" / "FINDINGS.md"  # a write-up kept in another folder, linked in
    kept_elsewhere.parent.mkdir()
    project_findings.rename(kept_elsewhere)
    project_findings.symlink_to(Path("..") / "notes" / "FINDINGS.md")
    plan = project / "research" / "research_plan.yaml"
    plan.write_text(plan.read_text().replace("acc: {target: 0.9, acceptable: 0.8, failure: 0.5}",
                                             "acc: {target: 0.93, acceptable: 0.8, failure: 0.5}"))
    results = project / "results" / "e1-tiny" / "results.yaml"
    done = _run_with_umask(project, 0o077)  # new files would be private; existing ones keep their mode
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    assert "≥ 0.93" in findings.read_text() and _mode(findings) == 0o640
    assert project_findings.is_symlink() and project_findings.resolve() == kept_elsewhere.resolve()
    assert "gates" in kept_elsewhere.read_text().lower() and _mode(kept_elsewhere) == 0o664
    # results.yaml is an update() output (rewritten in place, so it keeps its mode); the metric
    # table is not: Snakemake removed it first, and the new file follows the new umask
    assert "0.93" in results.read_text() and _mode(results) == 0o664
    assert _mode(results.parent / "metrics.md") == 0o600


FULL_DISK_PLAN = """\
project: {name: Full disk}
wandb: {mode: disabled}
defaults: {timeout_min: 2}
experiments:
  e1-tiny:
    sub_experiments: [a, b]
"""

FILLER_HANDLER = '''\
import os
import time
from pathlib import Path


def a(runner):
    runner.log_metrics({"acc": 0.1}, step=0)
    flags = Path(os.environ["TINY_FLAGS"])
    if not (flags / "fill").exists():
        return {"finding": "a fits now", "metrics": {"acc": 0.8}}
    deadline = time.monotonic() + 60
    while not (flags / "b-running").exists() and time.monotonic() < deadline:  # fill the disk under b's feet
        time.sleep(0.05)
    try:
        with open(runner.work_dir / "checkpoint.pt", "wb") as handle:
            while True:
                handle.write(b"x" * 65536)
    finally:
        print("a: the disk is full", "x" * 5000, flush=True)  # more than run.log's last block can take
        # the worker gives back the space it holds for its outcome as soon as the handler ends:
        # a moment for the supervisor to meet the full disk with this line first
        time.sleep(2)
        (flags / "disk-full").write_text("")
'''

SIBLING_HANDLER = '''\
import os
import time
from pathlib import Path


def b(runner):
    runner.log_metrics({"acc": 0.5}, step=0)
    flags = Path(os.environ["TINY_FLAGS"])
    (flags / "b-running").write_text("")
    # on until a's attempt is over: a's supervisor must meet the full disk with a's last line
    # before b's end gives back the space b holds in reserve for its record
    a_record = Path("results/e1-tiny/a/failure.yaml")
    deadline = time.monotonic() + 60
    while ((flags / "fill").exists() and "status: failed" not in (a_record.read_text() if a_record.exists() else "")
           and time.monotonic() < deadline):
        time.sleep(0.05)
    print("b carries on", flush=True)
    return {"finding": "b finished while the disk was full", "metrics": {"acc": 0.9}}
'''


def test_fault_full_disk_is_reported_as_such_and_spares_the_sibling(tmp_path: Path, small_fs: MountFactory) -> None:
    project = write_project(tmp_path / "proj", FULL_DISK_PLAN)
    (project / "handlers" / "e1-tiny" / "a.py").write_text(FILLER_HANDLER)
    (project / "handlers" / "e1-tiny" / "b.py").write_text(SIBLING_HANDLER)
    small_fs(project / "results", size_kib=8 * 1024)
    (project / "flags" / "fill").write_text("")

    done = run(project)

    console = done.stdout + done.stderr
    assert done.returncode != 0, console[-3000:]
    assert "Traceback" not in console and "Errno 28] No space left on device" in console
    assert "[e1-tiny/a] a: the disk is full xxx" in console  # the console still shows what run.log could not take
    # said right after that line; another job's output may come between the two on a shared console
    note = console.find("labrunner: the rest of this output is not in run.log: cannot write ")
    assert note > console.find("[e1-tiny/a] a: the disk is full xxx") >= 0, console[-3000:]
    a_dir, b_dir = project / "results" / "e1-tiny" / "a", project / "results" / "e1-tiny" / "b"
    failure = load(a_dir / "failure.yaml")
    assert failure["status"] == "failed" and failure["error"]["type"] == "OSError", failure
    assert failure["error"]["message"] == "[Errno 28] No space left on device"
    assert failure["error"]["handler_line"]["code"] == 'handle.write(b"x" * 65536)'
    assert "the disk is full" in failure["error"]["hint"]
    assert any(warning.startswith("no space left on device: ") and " free on the file system of " in warning
               for warning in failure["warnings"]), failure["warnings"]
    assert load(b_dir / "result.yaml")["finding"] == "b finished while the disk was full"  # the sibling is spared

    (a_dir / "work" / "checkpoint.pt").unlink()  # the researcher frees space
    (project / "flags" / "fill").unlink()
    done = run(project)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    failure = load(a_dir / "failure.yaml")
    assert failure["status"] == "resolved" and failure["last_failure"]["error"]["type"] == "OSError"  # not "Lost"


def test_fault_bad_command_line_values_stop_before_any_job(tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj")
    cases = {
        ("--config", "stub=maybe"): "--config: stub: expected true or false, got 'maybe'",
        ("--config", "backend=gpu"): "--config: backend: expected local or modal, got 'gpu'",
        ("--config", "stubb=true"): "--config: stubb: unknown key; did you mean 'stub'?",
        ("results/nope/results.yaml",): "names an unknown or archived experiment 'nope' (experiments: e1-tiny, e2-next)",
        ("results/e1-tiny/zz/result.yaml",): "e1-tiny/zz is not a sub-experiment run of the plan",
    }
    for args, message in cases.items():
        done = snakemake(project, "--cores", "2", *args)
        assert done.returncode != 0, args
        assert message in done.stdout + done.stderr, (args, done.stdout[-1500:])
    assert not (project / "results").exists()
