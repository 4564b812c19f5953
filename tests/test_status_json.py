"""`labrunner status --json` and `labrunner validate --json`: strict JSON in the documented schema,
built from the same records as the status table, with the next commands that make progress."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import PLAN_FILE, ProjectFactory, result_record
from labrunner.cli import main
from labrunner.invocation import Invocation
from labrunner.layout import RunPaths
from labrunner.plan import load_plan
from labrunner.records import write_failure, write_result
from labrunner.status_json import SCHEMA_VERSION

REPO = Path(__file__).resolve().parent.parent

PLAN = """\
project: {name: Json}
experiments:
  e1:
    success_criteria:
      acc: {target: 0.9, acceptable: 0.8, failure: 0.5}
    sub_experiments:
      ok: {}
      multi: {seeds: [0, 1]}
      broken: {}
      later: {skip: "not yet"}
  e2:
    requires: [g1]
    sub_experiments: [solo]
gates:
  g1: {experiments: [e1]}
"""
HANDLERS = {f"handlers/{exp}/{sub}.py": f"def {sub}(runner):\n    pass\n"
            for exp, subs in (("e1", ("ok", "multi", "broken")), ("e2", ("solo",))) for sub in subs}


def strict(text: str) -> Any:
    """json.loads that refuses NaN and Infinity: what other languages' parsers accept."""
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def result(root: Path, run: str, metrics: dict[str, Any], seed: int = 0) -> None:
    """A current result of `run` ("exp/sub" or "exp/sub/seed-N"), as run_sub writes it."""
    plan = load_plan(root / PLAN_FILE)
    exp, sub = run.split("/")[:2]
    write_result(RunPaths(root / "results" / run), result_record(plan, exp, sub, metrics, seed, duration_s=1.5), None)


def broken(root: Path) -> None:
    write_failure(RunPaths(root / "results" / "e1" / "broken"), {"run_id": "x", "attempts": 1, "error": {
        "type": "KeyError", "message": "'probs'", "hint": "print its keys", "traceback": "...",
        "handler_line": {"file": "handlers/e1/broken.py", "line": 2, "function": "broken", "code": "x['probs']"}}}, None)


def status_json(root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                *args: str) -> tuple[int, Any]:
    monkeypatch.chdir(root)
    code = main(["status", "--json", *args])
    return code, strict(capsys.readouterr().out)


def test_status_json_names_every_run_and_what_to_do_next(make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project(PLAN, HANDLERS)
    result(root, "e1/ok", {"acc": 0.85, "loss": float("nan")})
    result(root, "e1/multi/seed-0", {"acc": 0.92})
    broken(root)
    Invocation("snakemake", ("--cores", "8", "--config", "backend=modal")).save(root, stub=False)

    code, doc = status_json(root, monkeypatch, capsys)

    assert code == 1  # something failed
    assert (doc["schema"], doc["schema_version"], doc["ok"], doc["stub"]) == ("labrunner.status", SCHEMA_VERSION, False, False)
    assert doc["totals"] == {"subs": {"completed": 1, "pending": 1, "failed": 1, "skipped": 1, "held": 1},
                             "runs": {"completed": 2, "pending": 1, "failed": 1, "held": 1}}
    e1 = doc["experiments"]["e1"]
    assert e1["status"] == "failed" and e1["assessment"]["recommendation"] is None
    ok = e1["subs"]["ok"]
    assert ok["metrics"] == {"acc": 0.85, "loss": "NaN"} and ok["duration_s"] == 1.5
    assert ok["records"] == {"dir": "results/e1/ok", "result": "results/e1/ok/result.yaml",
                             "failure": "results/e1/ok/failure.yaml", "metrics": None, "log": None}
    seeds = e1["subs"]["multi"]["seeds"]
    assert [(run["seed"], run["status"], run["records"]["dir"]) for run in seeds] == [
        (0, "completed", "results/e1/multi/seed-0"), (1, "pending", "results/e1/multi/seed-1")]
    assert e1["subs"]["later"] == {"name": "later", "status": "skipped", "skip_reason": "not yet"}
    assert doc["gates"]["g1"]["status"] in ("failed", "pending") and doc["gates"]["g1"]["blockers"]
    solo = doc["experiments"]["e2"]["subs"]["solo"]
    assert solo["status"] == "held" and "g1" in solo["held_by"] and solo["records"]["result"] is None
    [failure] = doc["failures"]
    assert failure["error"]["type"] == "KeyError" and failure["error"]["message"] == "'probs'"
    assert failure["fix"] == {"file": "handlers/e1/broken.py", "line": 2}
    assert failure["records"]["failure"] == "results/e1/broken/failure.yaml"
    assert doc["last_run"]["command"] == "snakemake --cores 8 --config backend=modal"
    assert doc["next"] == [
        {"action": "fix", "file": "handlers/e1/broken.py", "line": 2, "why": "e1/broken: KeyError: 'probs'",
         "hint": "print its keys", "check": "labrunner run e1 broken"},
        {"action": "run", "command": "snakemake research/FINDINGS.md --cores 8 --config backend=modal",
         "why": "reruns what failed, was interrupted, is stale or missing; nothing else reruns"},
        {"action": "unblock", "experiment": "e2", "why": doc["experiments"]["e2"]["held_by"]},
    ]


def test_status_json_when_everything_is_done_points_at_the_write_up(
        make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project(PLAN.replace("      broken: {}\n", "").replace("{seeds: [0, 1]}", "{}")
                        .replace("    requires: [g1]\n", ""), HANDLERS)
    for run in ("e1/ok", "e1/multi", "e2/solo"):
        result(root, run, {"acc": 0.95})

    code, doc = status_json(root, monkeypatch, capsys)

    assert code == 0 and doc["ok"] is True and doc["failures"] == []
    assert doc["next"][0]["action"] == "write_findings"
    assert doc["next"][0]["files"] == ["research/FINDINGS.md", "research/experiments/e1/FINDINGS.md",
                                       "research/experiments/e2/FINDINGS.md"]
    assert doc["experiments"]["e1"]["assessment"]["recommendation"] in ("proceed", "pivot", "investigate")


def test_status_json_stub_tree(make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project(PLAN, HANDLERS)

    code, doc = status_json(root, monkeypatch, capsys, "--stub")

    assert code == 0 and doc["stub"] is True
    assert doc["experiments"]["e1"]["subs"]["ok"]["records"]["dir"] == "stub/results/e1/ok"
    assert doc["next"][0]["command"] == "snakemake stub/research/FINDINGS.md --config stub=true"


def test_status_json_of_an_invalid_plan_is_a_json_error(make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project(PLAN.replace("success_criteria:", "sucess_criteria:"), HANDLERS)

    code, doc = status_json(root, monkeypatch, capsys)

    assert code == 1
    assert (doc["schema"], doc["ok"], doc["error"]["type"]) == ("labrunner.status", False, "PlanError")
    assert doc["problems"] == [{"file": "research/research_plan.yaml", "line": 4, "key": "experiments.e1.sucess_criteria",
                                "message": "unknown key; did you mean 'success_criteria'?"}]


def test_validate_json(make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project(PLAN, HANDLERS)
    monkeypatch.chdir(root)

    assert main(["validate", "--json"]) == 0
    doc = strict(capsys.readouterr().out)
    (root / "handlers" / "e2" / "solo.py").unlink()
    assert main(["validate", "--json", "--plan", str(PLAN_FILE)]) == 1
    invalid = strict(capsys.readouterr().out)

    assert (doc["schema"], doc["schema_version"], doc["ok"], doc["problems"]) == ("labrunner.validate", 1, True, [])
    assert doc["experiments"]["e1"]["subs"]["multi"] == {
        "handler": "handlers/e1/multi.py::multi", "backend": "local", "gpu": None, "seeds": [0, 1],
        "timeout_min": 30.0, "retries": 0, "skip": None}
    assert doc["experiments"]["e1"]["criteria"]["acc"]["direction"] == "higher"
    assert doc["gates"] == {"g1": {"name": "g1", "experiments": ["e1"], "unlocks": None}}
    assert invalid["ok"] is False and invalid["problems"][0]["key"] == "experiments.e2.sub_experiments.solo"
    assert "handler file handlers/e2/solo.py not found" in invalid["problems"][0]["message"]


def test_status_json_schema_is_documented(make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """docs/cli.md names every key the documents have (besides each experiment's results.yaml keys,
    documented there by reference), and the schema version in force."""
    root = make_project(PLAN, HANDLERS)
    broken(root)
    _, doc = status_json(root, monkeypatch, capsys)
    docs = (REPO / "docs" / "cli.md").read_text()

    assert f"schema_version: {SCHEMA_VERSION}" in docs or f'"schema_version": {SCHEMA_VERSION}' in docs
    keys = set(doc) | set(doc["failures"][0]) | set(doc["failures"][0]["records"]) | set(doc["last_run"] or {})
    keys |= {key for step in doc["next"] for key in step}
    documented = set(re.findall(r"`([a-z_]+)`", docs))
    assert keys <= documented, keys - documented


def test_status_json_reports_stale_interrupted_and_gate_decisions(
        make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The states of issue 8 come through as results.yaml has them: a result made with other
    params is stale (with why), an attempt stopped from outside is interrupted (no fix: the rerun
    finishes it), and a gate carries the recorded human decision beside its computed status."""
    plan_text = PLAN.replace("  g1: {experiments: [e1]}", "  g1: {experiments: [e1], decision: {verdict: proceed, by: ana}}")
    root = make_project(plan_text, HANDLERS)
    result(root, "e1/ok", {"acc": 0.85})
    plan_file = root / PLAN_FILE
    plan_file.write_text(plan_file.read_text().replace("      ok: {}", "      ok: {params: {lr: 0.1}}"))
    write_failure(RunPaths(root / "results" / "e1" / "broken"), {"run_id": "x", "attempts": 1, "error": {
        "type": "Interrupted", "message": "the run was stopped by SIGINT", "hint": "run the same command again",
        "handler_line": None}}, None)

    code, doc = status_json(root, monkeypatch, capsys)

    subs = doc["experiments"]["e1"]["subs"]
    assert subs["ok"]["status"] == "stale" and "params changed" in subs["ok"]["stale"][0]
    assert subs["broken"]["status"] == "interrupted"
    assert code == 1 and [f["status"] for f in doc["failures"]] == ["interrupted"]
    assert [step["action"] for step in doc["next"]] == ["run"]  # nothing to fix: the rerun finishes it
    gate = doc["gates"]["g1"]
    assert gate["decision"]["verdict"] == "proceed" and gate["decision"]["by"] == "ana"
    assert "computed_status" in gate
    assert doc["experiments"]["e2"].get("held_by") is None  # the decision opened the gate


def test_status_json_masks_secrets(make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A token that reached a record (written before the variable was set, say) never reaches
    the JSON that an agent may paste somewhere."""
    root = make_project(PLAN, HANDLERS)
    write_failure(RunPaths(root / "results" / "e1" / "broken"), {"run_id": "x", "attempts": 1, "error": {
        "type": "HTTPError", "message": "401 for https://hub/api?token=hf_0123456789abcdef", "hint": None,
        "handler_line": None}}, None)
    monkeypatch.setenv("HF_TOKEN", "hf_0123456789abcdef")

    code, doc = status_json(root, monkeypatch, capsys)

    assert code == 1
    assert doc["failures"][0]["error"]["message"] == "401 for https://hub/api?token=***"
