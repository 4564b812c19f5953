"""Parsed YAML kept from one invocation to the next, by the text's SHA-256.

Parsing YAML is most of what reading labrunner's records and results costs: a thousand result
records take about 0.17 s to parse on a 2-core machine, the same data as JSON 5 ms. Every
invocation that aggregates reads every record (the aggregate steps, the write-up check at the end
of the run), and most of them are the texts the last invocation read. Snakemake's process of a
project keeps what it parsed in `.snakemake/labrunner/parsed-yaml.jsonl`, and the next one parses
only the texts it has not seen: the same text always parses to the same data, so a text's digest
(with the way it was read: a record, or YAML that remembers lines) names its data exactly. An
edited, truncated or rewritten file is another text, parsed afresh.

Snakemake's submitting process uses it (`use_store`, from the workflow), and so does `labrunner
status` in a project Snakemake has run in (`kept_for`); a job reads one or two records and parses
them. Only data that JSON gives back exactly is kept: mappings with string
keys, lists, strings, numbers, booleans and null (a timestamp or a set is parsed every time).
The file is only a cache: missing, damaged, of another format, or written by other loader code
or another PyYAML, it is ignored and every text is parsed, as without it. Entries that no invocation used in its
last few saves are dropped, so it holds about one copy of the project's records.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["MISSING", "STORE_PATH", "kept_for", "lookup", "remember", "save_store", "use_store"]

STORE_PATH = Path(".snakemake") / "labrunner" / "parsed-yaml.jsonl"  # from the project root
_FORMAT = 1
_KEEP_SAVES = 8  # an entry no saving invocation used in this many saves is dropped

MISSING: Any = object()  # what lookup gives for a text it has not kept


class _Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.loaded = False
        self.generation = 0  # of the file as loaded; this process saves generation + 1
        self.entries: dict[str, tuple[int, str]] = {}  # digest -> (generation last used, JSON)
        self.used: set[str] = set()
        self.added = False
        self.lock = threading.Lock()  # aggregate steps run in Snakemake's threads

    def load(self) -> None:
        """The entries as text, each decoded only when asked for: a hit costs one json.loads."""
        self.loaded = True
        try:
            lines = self.path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError):
            return
        try:
            header = json.loads(lines[0])
            if _versions() is None or header.get("header") != _versions():
                return
            self.generation = int(header["generation"])
        except (ValueError, TypeError, AttributeError, KeyError):
            return
        for line in lines[1:]:
            digest, _, rest = line.partition(" ")
            generation, _, data = rest.partition(" ")
            if len(digest) == 64 and data and generation.isdigit():
                self.entries[digest] = (int(generation), data)


_store: _Store | None = None


def use_store(path: Path) -> None:
    """Keep parsed texts in `path` for this process (read when a text is first looked up) and
    let save_store write them back."""
    global _store
    _store = _Store(Path(path))


@contextlib.contextmanager
def kept_for(root: Path) -> Iterator[None]:
    """For a command that reads every record (`labrunner status`): inside the block, records are
    taken as the last invocation parsed them, and what is parsed is kept for the next one; only
    in a project Snakemake has run in (the store lives in its .snakemake/, which no status creates)."""
    global _store
    if not (Path(root) / ".snakemake").is_dir():
        yield
        return
    before = _store
    use_store(Path(root) / STORE_PATH)
    try:
        yield
    finally:
        save_store()
        _store = before


@functools.cache
def _versions() -> list[Any] | None:
    """What the stored data depends on besides the text: the loaders' code (their modules'
    source, so that a change of how a text is read never meets data read the old way) and PyYAML."""
    import yaml

    from labrunner import records, yamlio

    sources = hashlib.sha256()
    try:
        for module in (records, yamlio):
            sources.update(Path(module.__file__ or "").read_bytes())
    except OSError:  # installed without its source: no store
        return None
    return ["labrunner-parsed-yaml", _FORMAT, sources.hexdigest(), yaml.__version__]


def _digest(kind: str, text: str) -> str:
    return hashlib.sha256(f"{kind}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()


def lookup(kind: str, text: str) -> Any:
    """The data `text` parsed to when it was read as `kind` before (a new object, the caller's
    own), or MISSING."""
    store = _store
    if store is None:
        return MISSING
    digest = _digest(kind, text)
    with store.lock:
        if not store.loaded:
            store.load()
        entry = store.entries.get(digest)
        if entry is None:
            return MISSING
        store.used.add(digest)
    try:
        return json.loads(entry[1])
    except ValueError:  # a damaged line: parse the text, and keep what that gives instead
        with store.lock:
            store.entries.pop(digest, None)
        return MISSING


def remember(kind: str, text: str, data: Any) -> None:
    """Keep what `text` parsed to when read as `kind`, if JSON gives it back exactly."""
    store = _store
    if store is None:
        return
    try:
        if not _json_exact(data):
            return
        encoded = json.dumps(data, separators=(",", ":"))  # ASCII: one line per entry, whatever the text
    except RecursionError:  # nested deeper than Python walks: parsed every time
        return
    digest = _digest(kind, text)
    with store.lock:
        if not store.loaded:
            store.load()
        store.entries[digest] = (store.generation + 1, encoded)
        store.used.add(digest)
        store.added = True


def _json_exact(data: Any) -> bool:
    """Whether json.loads(json.dumps(data)) is data, type for type (bool and float included)."""
    kind = type(data)
    if kind is dict:
        return all(type(key) is str and _json_exact(value) for key, value in data.items())
    if kind is list:
        return all(_json_exact(value) for value in data)
    return data is None or kind in (str, int, float, bool)


def save_store() -> None:
    """Write the entries back when this process parsed a text the file did not hold: the ones it
    used, and the others that a recent save used. Nothing to save writes nothing."""
    store = _store
    if store is None or not store.added or _versions() is None:
        return
    from labrunner.files import atomic_write_text

    with store.lock:
        generation = store.generation + 1
        kept = {digest: (generation if digest in store.used else used_at, data)
                for digest, (used_at, data) in store.entries.items()
                if digest in store.used or used_at > generation - _KEEP_SAVES}
        header = json.dumps({"header": _versions(), "generation": generation})
        text = "\n".join([header, *(f"{digest} {used_at} {data}" for digest, (used_at, data) in kept.items())]) + "\n"
        try:
            store.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(store.path, text, durable=False)
        except OSError:
            return  # only a cache: the next invocation parses these texts again
        store.entries, store.generation, store.used, store.added = kept, generation, set(), False
