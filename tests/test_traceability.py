"""Every number traceable: run-to-run change lines from real reruns, links to the records, learning
curves drawn from metrics.jsonl, and FINDINGS as a self-contained HTML page."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import matplotlib.image
import yaml

from conftest import EXP, PLAN_FILE, SUB, ProjectFactory, RunHandler, one_sub_plan, write
from labrunner.aggregate import collect_experiment
from labrunner.curves import curve_figure, read_curves, write_curve_plots
from labrunner.findings import render_experiment_findings
from labrunner.layout import RunPaths
from labrunner.plan import load_plan
from labrunner.records import checked_text
from labrunner.report import REPORT_ARTIFACT_MAX_BYTES, findings_html, gather_artifacts, write_findings_html
from labrunner.state import _previous, previous_result

FINDINGS = Path("research/experiments") / EXP / "FINDINGS.md"


def handler(acc: float, module: bool = False) -> str:
    imports = "from handlers.common import OFFSET\n\n\n" if module else ""
    offset = " + OFFSET" if module else ""
    return (f"{imports}def s1(runner):\n"
            f"    return {{'finding': 'ok', 'metrics': {{'accuracy': {acc}{offset}, 'loss': 0.3}}}}\n")


def blocks(root: Path) -> dict[str, str]:
    plan = load_plan(root / PLAN_FILE)
    return render_experiment_findings(collect_experiment(plan, EXP), FINDINGS, root, "results.yaml").blocks


def test_traceability_a_rerun_after_a_handler_change_shows_the_change(run_handler: RunHandler) -> None:
    first = run_handler(handler(0.912))
    root = first.paths.run_dir.parents[2]
    assert "after the rerun" not in blocks(root)["sub-results"]  # a first result has nothing to compare with

    run_handler(handler(0.934), root=root)

    plan = load_plan(root / PLAN_FILE)
    previous = collect_experiment(plan, EXP)["subs"][SUB]["previous"]
    assert previous["metrics"] == {"accuracy": 0.912, "loss": 0.3} and previous["changes"] == ["handler changed"]
    assert previous["run_id"] == first.record["run_id"]
    written = blocks(root)
    assert "_accuracy 0.912 -> 0.934 after the rerun; handler changed._" in written["sub-results"]
    assert f"**Changed since their previous results:** {SUB} (handler changed)" in written["status"]


def test_traceability_results_written_within_one_second_are_ordered_by_their_files_times(tmp_path: Path) -> None:
    # history names are stamped to the second: within one, the run ids decide the names' order,
    # here the opposite of the order in which the results were written
    paths = RunPaths(tmp_path / "results" / EXP / SUB)
    paths.history.mkdir(parents=True)
    for order, (run_id, accuracy) in enumerate([("c-first", 0.9), ("b-second", 0.912), ("a-third", 0.934)]):
        kept = paths.history / f"20261128T010203-{run_id}.result.yaml"
        kept.write_text(checked_text({"status": "completed", "run_id": run_id, "metrics": {"accuracy": accuracy}}))
        os.utime(kept, ns=(1_000_000_000 * order, 1_000_000_000 * order))

    assert previous_result(paths, "a-third")["run_id"] == "b-second"
    assert previous_result(paths, "b-second")["run_id"] == "c-first"
    assert previous_result(paths, "c-first") is None
    # a run whose latest attempt failed shows the newest of them as its earlier result
    assert _previous(None, paths)["run_id"] == "a-third"


def test_traceability_params_and_module_changes_are_named(run_handler: RunHandler, make_project: ProjectFactory) -> None:
    root = make_project(one_sub_plan(params={"lr": 0.1}), {"handlers/__init__.py": "", "handlers/common.py": "OFFSET = 0.0\n",
                                                           f"handlers/{EXP}/{SUB}.py": handler(0.9, module=True)})
    run_handler(handler(0.9, module=True), root=root)
    plan = yaml.safe_load((root / PLAN_FILE).read_text())
    plan["experiments"][EXP]["sub_experiments"][SUB]["params"] = {"lr": 0.2}
    write(root / PLAN_FILE, yaml.safe_dump(plan))
    write(root / "handlers" / "common.py", "OFFSET = 0.01\n")

    run_handler(handler(0.9, module=True), root=root)

    assert ("_accuracy 0.9 -> 0.91 after the rerun; params changed: lr 0.1 -> 0.2; module changed: handlers/common.py._"
            in blocks(root)["sub-results"])


def test_traceability_an_unchanged_rerun_says_so_only_when_a_metric_moved(run_handler: RunHandler) -> None:
    first = run_handler(handler(0.9))
    root = first.paths.run_dir.parents[2]
    run_handler(handler(0.9), root=root)  # the same code and params: nothing to say
    assert "after the rerun" not in blocks(root)["sub-results"]

    # a value that moves from run to run, as a nondeterministic GPU kernel's would (labrunner seeds
    # `random`): the count of runs so far, kept in work/, which persists across runs
    source = handler(0.9).replace("def s1(runner):\n", "def s1(runner):\n    count = runner.work_dir / 'count'\n"
                                  "    count.write_text(str(int(count.read_text()) + 1 if count.exists() else 1))\n")
    source = source.replace("0.9,", "0.9 + int(count.read_text()) / 100,")
    run_handler(source, root=root)  # the code changed and the value with it
    run_handler(source, root=root)  # then the same code again: only the noise moved it
    assert "after the rerun; same code, params and seed._" in blocks(root)["sub-results"]


def test_traceability_values_link_to_the_record_they_come_from(run_handler: RunHandler) -> None:
    root = run_handler(handler(0.9)).paths.run_dir.parents[2]

    written = blocks(root)

    assert f"| accuracy | [0.9](../../../results/{EXP}/{SUB}/result.yaml) |" in written["sub-results"]
    assert f"| {SUB} | 0 |  | [result.yaml](../../../results/{EXP}/{SUB}/result.yaml) |" in written["appendix"]


# --- learning curves -------------------------------------------------------------------------------

def metrics_line(run: str, attempt: int, step: int | None, **metrics: Any) -> str:
    return json.dumps({"step": step, "time_s": 0.0, "attempt": attempt, "run": run, "metrics": metrics}) + "\n"


def seed_run(root: Path, seed: int) -> dict[str, Any]:
    """A seed's run folder: metrics.jsonl with a failed attempt of an earlier job, an earlier attempt of
    this job and the attempt that made the result (the only lines drawn), and a line without a step."""
    folder = root / "results" / EXP / "mlp" / f"seed-{seed}"
    lines = [metrics_line("old", 1, 0, loss=9.0)]
    lines += [metrics_line("r", 1, step, loss=8.0) for step in range(3)]
    lines += [metrics_line("r", 2, step, loss=1.0 / (step + 1 + seed), accuracy=0.5 + step / 10) for step in range(5)]
    lines += [metrics_line("r", 2, None, final=1.0)]
    write(folder / "metrics.jsonl", "".join(lines))
    write(folder / "artifacts" / "plots" / "confusion.png", "not really a png")
    return {"seed": seed, "status": "completed", "run_id": "r", "attempts": 2,
            "result_file": f"results/{EXP}/mlp/seed-{seed}/result.yaml",
            "artifacts": [f"results/{EXP}/mlp/seed-{seed}/artifacts/plots/confusion.png"]}


def test_curves_keep_only_the_attempt_that_made_the_result(tmp_path: Path) -> None:
    run = seed_run(tmp_path, 0)

    curves = read_curves(tmp_path / Path(run["result_file"]).parent / "metrics.jsonl", "r", 2)

    assert sorted(curves) == ["accuracy", "loss"]  # `final` was logged without a step
    assert curves["loss"] == [(float(step), 1.0 / (step + 1)) for step in range(5)]


def test_curves_plot_is_a_png_with_one_line_per_seed_in_each_metric_panel(tmp_path: Path) -> None:
    results = {"experiment": EXP, "criteria": {"acc": {"metric": None}},
               "subs": {"mlp": {"status": "completed", "seeds": [seed_run(tmp_path, 0), seed_run(tmp_path, 1)]},
                        "skipped": {"status": "skipped"}}}

    written = write_curve_plots(results, tmp_path / "curves", tmp_path)

    assert written == {"mlp": "curves/mlp.png"}
    png = tmp_path / "curves" / "mlp.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and matplotlib.image.imread(png).shape[2] == 4
    figure = curve_figure("mlp", {seed: read_curves(tmp_path / f"results/{EXP}/mlp/seed-{seed}/metrics.jsonl", "r", 2)
                                  for seed in (0, 1)}, preferred=["accuracy"])
    panels = [axis for axis in figure.axes if axis.get_visible()]
    assert [axis.get_title() for axis in panels] == ["accuracy", "loss"]
    for axis in panels:
        series = [line for line in axis.get_lines() if line.get_gid() == "series"]
        assert [line.get_label() for line in series] == ["seed 0", "seed 1"]
        assert all(len(line.get_xdata()) == 5 for line in series)

    # the next aggregate draws again only what changed: the same results, the same drawing
    drawn, before = png.stat().st_ino, png.read_bytes()
    png.unlink()  # Snakemake empties a directory output before its job runs
    assert write_curve_plots(results, tmp_path / "curves", tmp_path) == written and png.stat().st_ino == drawn
    results["subs"]["mlp"]["seeds"][1]["run_id"] = "r2"  # seed 1 reran
    write(tmp_path / f"results/{EXP}/mlp/seed-1/metrics.jsonl", metrics_line("r2", 1, 0, loss=5.0))
    write_curve_plots(results, tmp_path / "curves", tmp_path)
    assert png.read_bytes() != before and len(list((tmp_path / ".curves-cache").iterdir())) == 1  # the old one pruned


def test_report_artifacts_are_gathered_by_run_keeping_their_folders(tmp_path: Path) -> None:
    results = {"subs": {"mlp": {"status": "completed", "seeds": [seed_run(tmp_path, 0), seed_run(tmp_path, 1)]}}}
    stale = tmp_path / "report" / "gone" / "old.png"
    write(stale, "x")

    gathered = gather_artifacts(results, tmp_path / "report", tmp_path)

    assert sorted(path.relative_to(tmp_path / "report").as_posix() for path in gathered) == [
        "mlp__seed-0__plots__confusion.png", "mlp__seed-1__plots__confusion.png"]
    assert not stale.exists()
    source = tmp_path / f"results/{EXP}/mlp/seed-0/artifacts/plots/confusion.png"
    assert gathered[0].stat().st_ino == source.stat().st_ino  # a hard link, not a copy

    # a file a web page cannot show, or one bigger than REPORT_ARTIFACT_MAX_BYTES, stays out
    run = results["subs"]["mlp"]["seeds"][0]
    folder = tmp_path / f"results/{EXP}/mlp/seed-0/artifacts"
    (folder / "model.pt").write_bytes(b"weights")
    (folder / "big.png").write_bytes(b"\0" * (REPORT_ARTIFACT_MAX_BYTES + 1))
    (folder / "just.png").write_bytes(b"\0" * REPORT_ARTIFACT_MAX_BYTES)
    run["artifacts"] += [f"results/{EXP}/mlp/seed-0/artifacts/{name}" for name in ("model.pt", "big.png", "just.png")]
    names = {path.name for path in gather_artifacts(results, tmp_path / "report", tmp_path)}
    assert "mlp__seed-0__just.png" in names and not names & {"mlp__seed-0__model.pt", "mlp__seed-0__big.png"}


# --- FINDINGS as HTML, for the report ----------------------------------------------------------------

def test_findings_html_embeds_images_and_keeps_no_link_it_cannot_follow(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\nfake"
    write(tmp_path / "results" / "plot.png", "")
    (tmp_path / "results" / "plot.png").write_bytes(png)
    markdown = tmp_path / "research" / "FINDINGS.md"
    write(markdown, "# Study — findings\n\n<!-- labrunner:begin status -->\n| a | b |\n|---|---|\n"
                    "| [0.9](../results/e1/result.yaml) | [W&B](https://wandb.ai/x) |\n<!-- labrunner:end status -->\n\n"
                    "![plot](../results/plot.png)\n\n<script>alert(1)</script>\n")

    page = findings_html(markdown)

    assert page.startswith("<!DOCTYPE html>\n<!-- made by labrunner from FINDINGS text sha256 ")
    assert "<title>Study — findings</title>" in page
    assert "labrunner:begin" not in page and "<table>" in page
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in page
    assert '<span class="path" title="../results/e1/result.yaml">0.9</span>' in page
    assert '<a href="https://wandb.ai/x">W&amp;B</a>' in page
    assert "<script>" not in page  # text from handlers and researchers is shown, never run
    html_path = tmp_path / "results" / "findings.html"
    assert write_findings_html(markdown, html_path) and not write_findings_html(markdown, html_path)  # made once
    markdown.write_text(markdown.read_text() + "\nA sentence of the researcher's.\n")
    assert write_findings_html(markdown, html_path) and "A sentence of the researcher" in html_path.read_text()
