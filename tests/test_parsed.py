"""Unit tests for labrunner.parsed: parsed records and results kept for the next invocation give
exactly what parsing gives, follow every change of the text, and a damaged store is only a cache."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from labrunner import parsed, records, yamlio
from labrunner.cli import main
from labrunner.layout import RunPaths
from labrunner.records import read_record, write_result
from labrunner.yamlio import load_yaml_cached, write_yaml
from workflow_support import run, write_project


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / ".snakemake" / "labrunner" / "parsed-yaml.jsonl"
    parsed.use_store(path)
    yield path
    parsed._store = None


def next_invocation(path: Path) -> None:
    """What a new Snakemake process sees: the saved store, and no in-process caches."""
    parsed.save_store()
    parsed.use_store(path)
    records._RECORD_CACHE.clear()
    yamlio._DATA_CACHE.clear()


@pytest.fixture
def no_parsing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the texts that are parsed (records and YAML that remembers lines)."""
    parsed_texts: list[str] = []
    load, parse = yaml.load, yamlio.parse_yaml

    def counting_load(text: str, Loader: type) -> object:  # noqa: N803 - yaml.load's own name
        parsed_texts.append(text)
        return load(text, Loader=Loader)  # noqa: S506 - the safe loader records passes

    def counting_parse(text: str, *args: object) -> object:
        parsed_texts.append(text)
        return parse(text, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(records.yaml, "load", counting_load)
    monkeypatch.setattr(yamlio, "parse_yaml", counting_parse)
    return parsed_texts


def a_result(tmp_path: Path, **metrics: object) -> RunPaths:
    paths = RunPaths(tmp_path / "results" / "e1" / "s1")
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    write_result(paths, {"experiment": "e1", "sub": "s1", "run_id": "r1", "metrics": metrics,
                         "ended_at": "2024-01-01T00:00:00+00:00"}, None)
    return paths


def test_parsed_a_record_read_again_by_the_next_invocation_is_not_parsed_and_is_the_same(
        tmp_path: Path, store: Path, no_parsing: list[str]) -> None:
    paths = a_result(tmp_path, acc=0.97, lr=1e-05, loss=math.inf, n=450, ok=True, note="line\nline\u2028é")
    first = read_record(paths.result)
    assert len(no_parsing) == 1
    next_invocation(store)

    again = read_record(paths.result)

    assert len(no_parsing) == 1  # nothing parsed: the stored data
    assert again == first
    assert [type(value) for value in again["metrics"].values()] == [float, float, float, int, bool, str]
    again["metrics"]["acc"] = 0.0  # the caller's own copy
    assert read_record(paths.result)["metrics"]["acc"] == 0.97


def test_parsed_an_edited_record_is_parsed_again_whatever_its_size_and_time(
        tmp_path: Path, store: Path, no_parsing: list[str]) -> None:
    paths = a_result(tmp_path, acc=0.97)
    read_record(paths.result)
    next_invocation(store)
    stat = paths.result.stat()

    paths2 = a_result(tmp_path, acc=0.98)  # the same length, put back with the same times
    os.utime(paths2.result, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    assert read_record(paths.result)["metrics"] == {"acc": 0.98}
    assert len(no_parsing) == 2


def test_parsed_a_damaged_record_is_refused_again_though_its_text_was_stored(
        tmp_path: Path, store: Path) -> None:
    paths = a_result(tmp_path, acc=0.97)
    read_record(paths.result)
    next_invocation(store)
    paths.result.write_text(paths.result.read_text().replace("0.97", "0.99"))

    with pytest.raises(records.RecordError, match="damaged"):
        read_record(paths.result)


def test_parsed_data_json_would_change_is_not_kept(tmp_path: Path, store: Path, no_parsing: list[str]) -> None:
    results = tmp_path / "results.yaml"
    results.write_text("generated_at: 2024-01-01 10:00:00\nby_seed:\n  1: 0.5\n")
    first = load_yaml_cached(results)
    next_invocation(store)

    again = load_yaml_cached(results)

    assert again == first and type(again["generated_at"]).__name__ == "datetime"
    assert len(no_parsing) == 2  # parsed each time: JSON has no timestamps


def test_parsed_results_yaml_is_kept_as_labrunner_reads_it(tmp_path: Path, store: Path, no_parsing: list[str]) -> None:
    results = tmp_path / "results.yaml"
    write_yaml(results, {"subs": {"1.10": {"status": "completed", "metrics": {"x": float("nan")}}}, "on": [1, "2"]})
    first = load_yaml_cached(results)
    next_invocation(store)

    again = load_yaml_cached(results)

    assert len(no_parsing) == 1
    assert list(again) == list(first) == ["subs", "on"] and again["on"] == [1, "2"]
    assert math.isnan(again["subs"]["1.10"]["metrics"]["x"])


@pytest.mark.parametrize("damage", [
    lambda text: "not json at all\n" + text,
    lambda text: text.replace('"generation"', '"gen"'),
    lambda text: text.replace("labrunner-parsed-yaml", "another-format"),
    lambda text: text.replace('{"status"', '{"status', 1),  # one entry cut short
    lambda text: text[: len(text) // 2],
    lambda text: "",
])
def test_parsed_a_damaged_store_is_only_a_cache(tmp_path: Path, store: Path, damage: object) -> None:
    paths = a_result(tmp_path, acc=0.97)
    expected = read_record(paths.result)
    next_invocation(store)
    store.write_text(damage(store.read_text()))  # type: ignore[operator]
    parsed.use_store(store)
    records._RECORD_CACHE.clear()

    assert read_record(paths.result) == expected
    parsed.save_store()
    parsed.use_store(store)
    records._RECORD_CACHE.clear()
    assert read_record(paths.result) == expected


def test_parsed_a_store_of_other_loader_code_is_not_used(
        tmp_path: Path, store: Path, no_parsing: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    paths = a_result(tmp_path, acc=0.97)
    read_record(paths.result)
    next_invocation(store)
    monkeypatch.setattr(parsed, "_versions", lambda: ["labrunner-parsed-yaml", 1, "other code", yaml.__version__])

    read_record(paths.result)

    assert len(no_parsing) == 2


def test_parsed_entries_no_recent_invocation_used_are_dropped(tmp_path: Path, store: Path) -> None:
    kept = tmp_path / "kept.yaml"
    kept.write_text("a: 1\n")
    load_yaml_cached(kept)
    old = tmp_path / "old.yaml"
    old.write_text("b: 2\n")
    load_yaml_cached(old)
    for round_ in range(parsed._KEEP_SAVES + 1):
        next_invocation(store)
        load_yaml_cached(kept)
        new = tmp_path / f"new-{round_}.yaml"
        new.write_text(f"c: {round_}\n")
        load_yaml_cached(new)  # something new each time: each invocation saves
    parsed.save_store()

    lines = store.read_text().splitlines()
    assert len(lines) == 1 + 1 + parsed._KEEP_SAVES  # the header, kept.yaml, the recent new ones
    assert not any('"b":2' in line for line in lines)
    assert sum('"a":1' in line for line in lines) == 1


def test_parsed_nothing_new_writes_nothing(tmp_path: Path, store: Path) -> None:
    paths = a_result(tmp_path, acc=0.97)
    read_record(paths.result)
    next_invocation(store)
    before = store.stat().st_mtime_ns
    read_record(paths.result)
    parsed.save_store()
    assert store.stat().st_mtime_ns == before


def test_parsed_without_a_store_every_text_is_parsed(tmp_path: Path, no_parsing: list[str]) -> None:
    parsed._store = None
    paths = a_result(tmp_path, acc=0.97)
    read_record(paths.result)
    records._RECORD_CACHE.clear()
    read_record(paths.result)
    parsed.save_store()
    assert len(no_parsing) == 2
    assert not (tmp_path / ".snakemake").exists()


def test_parsed_data_nested_deeper_than_python_walks_is_not_kept(store: Path) -> None:
    deep: list[object] = []
    for _ in range(10_000):  # deeper than the recursion limit: a loader that allows it must still not fail here
        deep = [deep]

    parsed.remember("yaml", "deep", deep)

    assert parsed.lookup("yaml", "deep") is parsed.MISSING


def test_parsed_status_takes_the_records_as_the_last_run_parsed_them(
        tmp_path: Path, no_parsing: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    project = write_project(tmp_path / "proj")
    assert run(project).returncode == 0
    monkeypatch.chdir(project)
    records._RECORD_CACHE.clear()

    assert main(["status", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert not [text for text in no_parsing if "labrunner-sha256" in text]  # every record as the run parsed it
    assert main(["status"]) == 0

    # a record that changed since is parsed, and what it says is shown
    result = project / "results" / "e1-tiny" / "a" / "result.yaml"
    result.write_text(records.checked_text({**read_record(result), "finding": "a says something new"}))
    records._RECORD_CACHE.clear()
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    assert "a says something new" in capsys.readouterr().out
    assert [text for text in no_parsing if "labrunner-sha256" in text] == [result.read_text()]
    assert document["ok"] is True


def test_parsed_status_of_a_project_snakemake_never_ran_in_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    project = write_project(tmp_path / "proj")
    assert run(project).returncode == 0
    shutil.rmtree(project / ".snakemake")  # records, and no Snakemake folder: copied from elsewhere, say
    monkeypatch.chdir(project)
    records._RECORD_CACHE.clear()

    assert main(["status"]) == 0
    assert "e1-tiny" in capsys.readouterr().out
    assert not (project / ".snakemake").exists()


def test_parsed_a_results_file_rewritten_within_one_tick_is_read_again(tmp_path: Path) -> None:
    # the in-process cache of load_yaml_cached compares the text, as read_record does: the same
    # inode, time and size can hold another text
    results = tmp_path / "results.yaml"
    results.write_text("status: completed\nacc: 0.97\n")
    assert load_yaml_cached(results)["acc"] == 0.97
    stat = results.stat()

    results.write_text("status: completed\nacc: 0.98\n")  # in place: the same inode and size
    os.utime(results, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    assert results.stat().st_ino == stat.st_ino and load_yaml_cached(results)["acc"] == 0.98
