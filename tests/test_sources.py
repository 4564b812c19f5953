"""labrunner.sources: the facts about handler files (functions, imports) kept between
invocations, so that reading a large plan parses only the handlers that changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labrunner import sources

PARSE = sources._parse  # the parser, before any test wraps it
HANDLER = "from handlers.helpers import scale\n\n\ndef a(runner, extra=1):\n    return scale(1)\n"


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new invocation does: nothing known, nothing parsed."""
    monkeypatch.setattr(sources, "_known", {})
    monkeypatch.setattr(sources, "_used", {})


def new_invocation(monkeypatch: pytest.MonkeyPatch, facts: Path) -> list[str]:
    """Forget this process's work, load the saved facts; the files parsed from then on."""
    monkeypatch.setattr(sources, "_known", {})
    monkeypatch.setattr(sources, "_used", {})
    sources.load_facts(facts)
    parsed: list[str] = []

    def counting(path: str) -> sources.ModuleInfo:
        parsed.append(os.path.basename(path))
        return PARSE(path)

    monkeypatch.setattr(sources, "_parse", counting)
    return parsed


def test_sources_facts_saved_spare_the_next_invocation_every_unchanged_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text(HANDLER)
    b.write_text("def b(runner):\n    return {}\n")
    facts = tmp_path / ".snakemake" / "labrunner" / "handler-facts.json"
    first = {path.name: sources.module_info(path) for path in (a, b)}
    sources.save_facts(facts)
    assert facts.is_file()

    parsed = new_invocation(monkeypatch, facts)
    assert {path.name: sources.module_info(path) for path in (a, b)} == first  # the same facts, none parsed
    assert parsed == []
    saved_at = facts.stat().st_mtime_ns
    sources.save_facts(facts)
    assert facts.stat().st_mtime_ns == saved_at  # nothing changed: nothing written

    # an edit of the same size (a new file put in place, as editors and atomic writes do) is parsed again
    replacement = tmp_path / "a.new"
    replacement.write_text(HANDLER.replace("def a(runner, extra=1)", "def a(runner, extra=2)"))
    os.replace(replacement, a)
    parsed = new_invocation(monkeypatch, facts)
    assert sources.module_info(a).functions["a"].required_positional == 1
    assert sources.module_info(b) == first["b.py"]
    assert parsed == ["a.py"]


@pytest.mark.parametrize("content", ["not json", '{"format": 999, "files": {}}', '{"format": 1, "files": []}',
                                     '{"format": 1, "files": {"PATH": [[1, 2, 3], {"functions": 7}]}}'])
def test_sources_a_damaged_facts_file_is_parsed_around(content: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = tmp_path / "a.py"
    a.write_text(HANDLER)
    stat = a.stat()
    facts = tmp_path / "handler-facts.json"
    facts.write_text(content.replace("PATH", str(a)).replace("[1, 2, 3]", f"[{stat.st_ino}, {stat.st_mtime_ns}, {stat.st_size}]"))

    parsed = new_invocation(monkeypatch, facts)
    info = sources.module_info(a)
    assert parsed == ["a.py"] and set(info.functions) == {"a"} and info.imports == ((0, "handlers.helpers", ("scale",)),)
