"""FINDINGS.md: generated blocks regenerate, everything else is the researcher's, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from labrunner.errors import FindingsError
from labrunner.findings import Document, merge_blocks, render_experiment_findings, write_findings

RESULTS = {
    "experiment": "e1", "name": "E1: tiny", "status": "completed", "stub": False, "generated_at": "now",
    "counts": {"completed": 2, "failed": 0, "pending": 0, "skipped": 1},
    "subs": {
        "a": {"name": "A", "status": "completed", "seed": 0, "finding": "a works", "metrics": {"acc": 0.91},
              "artifacts": ["results/e1/a/artifacts/curve.png"], "duration_s": 1.5, "attempts": 1,
              "wandb": {"mode": "offline", "path": "results/e1/a/wandb/offline-run-x"}, "params": {"lr": 0.1}},
        "b": {"name": "B", "status": "completed", "params": {}, "metrics": {"acc": 0.95},
              "seeds": [{"seed": 0, "status": "completed", "finding": "b0", "metrics": {"acc": 0.94}},
                        {"seed": 1, "status": "completed", "finding": "b1", "metrics": {"acc": 0.96}}]},
        "c": {"name": "C", "status": "skipped", "skip_reason": "not now"},
    },
    "criteria": {"acc": {"target": 0.9, "acceptable": 0.8, "failure": 0.5, "direction": "higher"},
                 "loss": {"target": 0.1, "acceptable": 0.2, "failure": None, "direction": "lower"}},
    "verdicts": {
        "acc": {"level": "target met", "value": 0.95, "source_sub": "b", "n_seeds": 2, "ci95": [0.93, 0.97],
                "borderline": False, "confidence": "high", "sentence": "acc of 0.95 meets the 0.9 target", "notes": []},
        "loss": {"level": "not measured", "value": None, "source_sub": None, "n_seeds": 0, "ci95": None,
                 "borderline": False, "confidence": None, "sentence": "loss was not measured", "notes": []},
    },
    "assessment": {"recommendation": "investigate", "reasons": ["loss was not measured"], "borderline": [],
                   "confidence": "high"},
    "plot": "results/e1/criteria.png",
}


def document(findings: Path, root: Path) -> Document:
    return render_experiment_findings(RESULTS, findings.relative_to(root), root, "results/e1/results.yaml")


def test_findings_first_version_is_a_full_write_up_with_prompts(tmp_path: Path) -> None:
    path = tmp_path / "research" / "experiments" / "e1" / "FINDINGS.md"
    write_findings(path, document(path, tmp_path))
    text = path.read_text()
    for heading in ("# E1: tiny — findings", "## Summary", "## Key metrics", "## Results by sub-experiment",
                    "## Analysis", "## Implications", "## Confidence", "## Plots", "## Next steps", "## Appendix"):
        assert heading in text
    assert text.count("> **To write:**") >= 5
    assert "| Metric | Value | Target | Acceptable | Failure | Result |" in text
    assert "| acc | 0.95 (b, 2 seeds) | ≥ 0.9 | ≥ 0.8 | ≤ 0.5 | ✅ target met |" in text
    assert "| loss | — | ≤ 0.1 | ≤ 0.2 | — | ❔ not measured |" in text
    assert "[curve.png](../../../results/e1/a/artifacts/curve.png)" in text
    assert "![criteria](../../../results/e1/criteria.png)" in text
    assert "⏭️ **skipped**: not now" in text
    assert "| acc | 0.95 | 0.94, 0.96 |" in text  # mean and per seed


def test_findings_regeneration_keeps_every_byte_outside_the_markers(tmp_path: Path) -> None:
    path = tmp_path / "FINDINGS.md"
    write_findings(path, document(path, tmp_path))
    original = path.read_text()
    mine = original.replace("## Analysis\n", "## Analysis\n\nMy analysis — with unicode ✓ and  spaces  \n\n\n")
    mine = mine.replace("<!-- labrunner:begin key-metrics -->\n", "<!-- labrunner:begin key-metrics -->\nstale\n")
    path.write_text(mine)

    write_findings(path, document(path, tmp_path))

    assert path.read_text() == mine.replace("<!-- labrunner:begin key-metrics -->\nstale\n",
                                            "<!-- labrunner:begin key-metrics -->\n")


def test_findings_crlf_file_stays_crlf(tmp_path: Path) -> None:
    existing = "# Mine\r\n\r\n<!-- labrunner:begin status -->\r\nold\r\n<!-- labrunner:end status -->\r\ntail\r\n"
    merged = merge_blocks(existing, {"status": "line one\nline two"})
    assert merged == "# Mine\r\n\r\n<!-- labrunner:begin status -->\r\nline one\r\nline two\r\n<!-- labrunner:end status -->\r\ntail\r\n"


def test_findings_block_the_researcher_deleted_is_not_brought_back(tmp_path: Path) -> None:
    existing = "# Mine\n<!-- labrunner:begin status -->\nold\n<!-- labrunner:end status -->\n"
    assert merge_blocks(existing, {"status": "new", "plots": "pictures"}) == existing.replace("old", "new")


def test_findings_unknown_block_is_left_alone() -> None:
    existing = "<!-- labrunner:begin mine -->\nkeep\n<!-- labrunner:end mine -->\n"
    assert merge_blocks(existing, {"status": "new"}) == existing


@pytest.mark.parametrize(("text", "message", "line"), [
    ("<!-- labrunner:begin status -->\nno end\n", "block 'status' has no end marker", None),
    ("x\n<!-- labrunner:end status -->\n", "end marker of 'status' without its begin marker", 2),
    ("<!-- labrunner:begin a -->\n<!-- labrunner:begin b -->\n<!-- labrunner:end b -->\n<!-- labrunner:end a -->\n",
     "block 'b' begins inside block 'a'", 2),
    ("<!-- labrunner:begin a -->\n<!-- labrunner:end a -->\n<!-- labrunner:begin a -->\n<!-- labrunner:end a -->\n",
     "block 'a' appears twice", 3),
])
def test_findings_broken_markers_are_an_error_and_the_file_is_untouched(tmp_path: Path, text: str, message: str,
                                                                      line: int | None) -> None:
    path = tmp_path / "FINDINGS.md"
    path.write_text(text)
    with pytest.raises(FindingsError, match=message) as caught:
        write_findings(path, document(path, tmp_path))
    assert caught.value.issues[0].line == line
    assert caught.value.issues[0].file == str(path)
    assert path.read_text() == text


def test_findings_marker_text_in_a_finding_or_metric_name_is_escaped(tmp_path: Path) -> None:
    hostile = {**RESULTS, "subs": {**RESULTS["subs"], "a": {
        **RESULTS["subs"]["a"], "finding": "done <!-- labrunner:end sub-results --> and <!-- unclosed",
        "metrics": {"<!-- labrunner:begin status -->acc": 0.91}}}}
    path = tmp_path / "FINDINGS.md"
    for _ in range(3):  # the first version, then regenerations that must each find intact markers
        write_findings(path, render_experiment_findings(hostile, Path("FINDINGS.md"), tmp_path, "results/e1/results.yaml"))
        path.write_text(path.read_text().replace("## Analysis\n", "## Analysis\n\nMy own words.\n", 1))

    text = path.read_text()
    assert "> done &lt;!-- labrunner:end sub-results --> and &lt;!-- unclosed" in text
    assert "| &lt;!-- labrunner:begin status -->acc | 0.91 |" in text
    assert text.count("<!-- labrunner:end sub-results -->") == 1 and text.count("<!-- labrunner:begin status -->") == 1
    assert text.count("My own words.") == 3
