"""Static facts about handler files: which functions they define and which local files they import.

Both are read from the syntax tree, never by importing: validating a plan or building the
Snakemake DAG must not run handler code (which may import torch, touch a GPU, or be broken).
The local imports become job inputs, so editing a helper module reruns exactly the subs that
use it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import keyword
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["FunctionInfo", "ModuleInfo", "code_hashes", "file_sha256", "load_facts", "local_imports", "module_info",
           "resolve_handler", "save_facts"]


@dataclass(frozen=True)
class FunctionInfo:
    name: str
    line: int
    positional: int
    required_positional: int
    required_keyword_only: int
    takes_varargs: bool
    is_async: bool


@dataclass(frozen=True)
class ModuleInfo:
    functions: dict[str, FunctionInfo]
    imports: tuple[tuple[int, str, tuple[str, ...]], ...]  # (relative level, module, imported names)
    syntax_error: str | None = None


def _parse(path: str) -> ModuleInfo:
    """Parse a handler file (module_info keeps the result while the file's stamp is the same)."""
    with open(path, "rb") as handle:  # IsADirectoryError for a folder: not a handler file
        source = handle.read()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        return ModuleInfo({}, (), f"syntax error at line {exc.lineno}: {exc.msg}")
    functions: dict[str, FunctionInfo] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = len(args.posonlyargs) + len(args.args)
            functions[node.name] = FunctionInfo(
                name=node.name,
                line=node.lineno,
                positional=positional,
                required_positional=positional - len(args.defaults),
                required_keyword_only=sum(default is None for default in args.kw_defaults),
                takes_varargs=args.vararg is not None,
                is_async=isinstance(node, ast.AsyncFunctionDef),
            )
    imports: list[tuple[int, str, tuple[str, ...]]] = []
    for node in _statements(tree.body):  # imports inside functions count: handlers import lazily
        if isinstance(node, ast.Import):
            imports.extend((0, alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imports.append((node.level, node.module or "", tuple(alias.name for alias in node.names)))
    return ModuleInfo(functions, tuple(imports))


_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")


def _statements(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every statement, nested ones included, without descending into expressions: imports
    are statements, and skipping expressions makes this several times faster than ast.walk
    (it runs on every handler file at every `snakemake -n`)."""
    for node in body:
        yield node
        for name in _BLOCKS:
            nested = getattr(node, name, None)
            if nested:
                yield from _statements(nested)


# Facts about files read at an earlier invocation (`load_facts`), and those used by this one, to
# keep for the next (`save_facts`): absolute path -> ((inode, mtime_ns, size), facts). Parsing
# every handler again is most of what reading a plan of 10,000 subs costs; a file whose inode,
# time and size are unchanged is the file that was parsed (what Snakemake itself trusts of files).
_Stamp = tuple[int, int, int]
_known: dict[str, tuple[_Stamp, Any]] = {}
_used: dict[str, tuple[_Stamp, ModuleInfo]] = {}
FACTS_FORMAT = 1


def module_info(path: Path | str) -> ModuleInfo:
    # strings, not Path, and abspath, not resolve(): this runs for every handler at every
    # `snakemake -n`, and pathlib's overhead was a third of the time
    absolute = os.path.abspath(path)
    stat = os.stat(absolute)
    stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    used = _used.get(absolute)
    if used is not None and used[0] == stamp:
        return used[1]
    known = _known.get(absolute)
    info = _from_json(known[1]) if known is not None and known[0] == stamp else None
    if info is None:
        info = _parse(absolute)
    _used[absolute] = (stamp, info)
    return info


def load_facts(path: Path) -> None:
    """Take the facts an earlier invocation saved; a missing or unreadable file is no error
    (every handler is parsed, as without it)."""
    try:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
        if saved.get("format") != FACTS_FORMAT:
            return
        known = {str(file): (tuple(stamp), facts) for file, (stamp, facts) in saved["files"].items()}
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return
    _known.update(known)  # type: ignore[arg-type]


def save_facts(path: Path) -> None:
    """Keep the facts of the files this invocation used, for the next one (only when they differ
    from what was loaded: a no-op invocation writes nothing)."""
    files = {file: (stamp, _to_json(info)) for file, (stamp, info) in _used.items()}
    if files.keys() == _known.keys() and all(_known[file][0] == stamp for file, (stamp, _) in files.items()):
        return
    from labrunner.files import atomic_write_text

    text = json.dumps({"format": FACTS_FORMAT, "files": {file: [list(stamp), facts] for file, (stamp, facts) in files.items()}},
                      separators=(",", ":"))
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(path), text, durable=False)  # only a cache: no wait for the disk
    except OSError:
        return  # only a cache: the next invocation parses the handlers again
    _known.clear()
    _known.update(files)


def _to_json(info: ModuleInfo) -> dict[str, Any]:
    return {"functions": {name: [f.line, f.positional, f.required_positional, f.required_keyword_only,
                                 f.takes_varargs, f.is_async] for name, f in info.functions.items()},
            "imports": [[level, module, list(names)] for level, module, names in info.imports],
            "syntax_error": info.syntax_error}


def _from_json(facts: Any) -> ModuleInfo | None:
    """The facts as saved; None when they are not in the shape _to_json writes (parse again)."""
    try:
        functions = {str(name): FunctionInfo(str(name), *values) for name, values in facts["functions"].items()}
        imports = tuple((int(level), str(module), tuple(map(str, names))) for level, module, names in facts["imports"])
        return ModuleInfo(functions, imports, facts["syntax_error"])
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


def default_function_names(sub_id: str) -> list[str]:
    """A sub's handler is the function named like the sub id, else `run`."""
    names = [sub_id] if sub_id.isidentifier() and not keyword.iskeyword(sub_id) else []
    return names + ["run"]


def resolve_handler(root: Path, handlers_dir: Path, sub_id: str, setting: str | None,
                    check: bool) -> tuple[Path, str, list[str]]:
    """Find a sub's handler file (relative to root) and function; list what is wrong with it.

    `setting` is the plan's `handler:` value: "path.py::function", "path.py" or "function".
    """
    file_part, function = None, None
    if setting:
        if "::" in setting:
            file_part, function = setting.split("::", 1)
        elif setting.endswith(".py"):
            file_part = setting
        else:
            function = setting
    relative = Path(file_part) if file_part else handlers_dir / f"{sub_id}.py"
    if file_part and not (root / relative).exists() and (root / handlers_dir / relative).exists():
        relative = handlers_dir / relative  # a bare file name means one in the handlers folder
    candidates = [function] if function else default_function_names(sub_id)
    if not check:
        return relative, _defined_candidate(os.path.join(root, relative), candidates), []
    try:
        info = module_info(os.path.join(root, relative))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return relative, candidates[0], [_missing_file(relative, root, candidates)]
    if info.syntax_error:
        return relative, candidates[0], [f"handler file {relative} has a {info.syntax_error}"]
    found = next((name for name in candidates if name in info.functions), None)
    if found is None:
        defined = ", ".join(sorted(info.functions)) or "no functions"
        wanted = " or ".join(repr(name) for name in candidates)
        return relative, candidates[0], [f"{relative} defines no function {wanted}; it defines: {defined}"]
    return relative, found, _signature_problems(info.functions[found], relative)


def _defined_candidate(path: str, candidates: list[str]) -> str:
    """The first candidate the file defines, without reporting problems (those are the checking
    pass's job); the first candidate when the file cannot be read."""
    try:
        functions = module_info(path).functions
    except OSError:
        return candidates[0]
    return next((name for name in candidates if name in functions), candidates[0])


def _missing_file(relative: Path, root: Path, candidates: list[str]) -> str:
    folder = root / relative.parent
    message = f"handler file {relative} not found (expected a function {' or '.join(candidates)} in it)"
    if folder.is_dir():
        present = sorted(p.name for p in folder.glob("*.py"))
        if present:
            message += f"; {relative.parent} has: {', '.join(present)}"
    else:
        message += f"; the folder {relative.parent} does not exist"
    return message


def _signature_problems(function: FunctionInfo, relative: Path) -> list[str]:
    where = f"handler {function.name} ({relative}:{function.line})"
    if function.is_async:
        return [f"{where} is async; expected a plain function"]
    accepts_one = function.positional >= 1 or function.takes_varargs
    if function.required_positional > 1 or function.required_keyword_only or not accepts_one:
        count = function.required_positional + function.required_keyword_only
        return [f"{where} must take one argument (the ExperimentRunner); it requires {count}"]
    return []


def local_imports(handler: Path, root: Path) -> list[Path]:
    """Project files a handler imports, directly or through other project files (sorted)."""
    root = Path(os.path.abspath(root))
    start = Path(os.path.abspath(handler))
    seen: set[Path] = set()
    pending = [start]
    while pending:
        current = pending.pop()
        if not current.is_file():
            continue
        for level, module, names in module_info(current).imports:
            for found in _module_files(current, root, level, module, names):
                if found not in seen and found != start:
                    seen.add(found)
                    pending.append(found)
    return sorted(seen)


def _module_files(importer: Path, root: Path, level: int, module: str, names: tuple[str, ...]) -> list[Path]:
    if level:
        bases = [importer.parents[level - 1]]
    else:
        bases = [importer.parent, root]
    parts = module.split(".") if module else []
    found: list[Path] = []
    for base in bases:
        for candidate in _candidates(base, parts, names):
            if not candidate.is_file():  # most candidates do not exist: `import torch` looks here too
                continue
            absolute = Path(os.path.abspath(candidate))
            if absolute.is_relative_to(root) and not _is_environment(absolute, root):
                found.append(absolute)
        if found:
            break  # Python takes the first folder on the path that has the module
    return found


def _candidates(base: Path, parts: list[str], names: tuple[str, ...]) -> list[Path]:
    candidates = []
    # package __init__ files along the way run on import too
    for depth in range(1, len(parts) + 1):
        candidates.append(base.joinpath(*parts[:depth], "__init__.py"))
    if parts:
        candidates.append(base.joinpath(*parts[:-1], parts[-1] + ".py"))
    for name in names:  # `from pkg import mod` may name a submodule
        candidates.append(base.joinpath(*parts, name + ".py"))
        candidates.append(base.joinpath(*parts, name, "__init__.py"))
    return candidates


def _is_environment(path: Path, root: Path) -> bool:
    relative = path.relative_to(root).parts
    return any(part in (".venv", "venv", "site-packages", ".snakemake", "node_modules") for part in relative)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@lru_cache(maxsize=1 << 16)
def _cached_sha256(path: str, mtime_ns: int, size: int) -> str:
    del mtime_ns, size  # part of the cache key only: an edited file is hashed again
    return file_sha256(Path(path))


def code_hashes(root: Path, handler_file: Path) -> dict[str, str]:
    """The code a sub runs: its handler file and every project module it imports, as
    {path relative to the root: sha256}. The same files are the inputs of its Snakemake job, so
    a result that records these hashes can be checked against the code as it is now."""
    root = Path(os.path.abspath(root))
    handler = root / handler_file
    files = [handler] + (local_imports(handler, root) if handler.is_file() else [])
    hashes = {}
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            continue  # a missing file: absent from the hashes, so it reads as changed
        hashes[path.relative_to(root).as_posix()] = _cached_sha256(str(path), stat.st_mtime_ns, stat.st_size)
    return hashes
