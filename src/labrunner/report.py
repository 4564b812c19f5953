"""What `snakemake --report report.html research/FINDINGS.md` shows besides the plots.

Snakemake's report embeds the files that rules flag with `report()` (see rules/aggregate.smk) and
shows HTML and images in the page, anything else as a download. So the FINDINGS files get an
HTML twin (results/findings.html, results/<exp>/findings.html), self-contained: the images they
show are embedded, and links to files (which a report cannot follow) become plain text with the
path as a tooltip. The handlers' artifacts live in the run folders, which no rule declares (a
failed job would lose them); each experiment's aggregate gathers the ones a page can show into
results/<exp>/report/ as hard links (copies across file systems), so the report can flag them.
That folder is flat (`<sub>__[seed-<n>__]<name>`, a folder in a name written `__`): Snakemake's
report matches its patterns against folders as well as files.
"""

from __future__ import annotations

import base64
import hashlib
import html
import mimetypes
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labrunner.files import atomic_write_text, link_or_copy

__all__ = ["REPORT_ARTIFACT_MAX_BYTES", "REPORT_ARTIFACT_SUFFIXES", "findings_html", "gather_artifacts",
           "write_findings_html"]

EMBED_MAX_BYTES = 5 << 20  # an image bigger than this is shown by name, not embedded
REPORT_ARTIFACT_MAX_BYTES = 5 << 20  # artifacts gathered for the report: a checkpoint is not for a web page
REPORT_ARTIFACT_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".gif", ".pdf", ".html", ".csv", ".tsv", ".json",
                            ".txt", ".md", ".yaml", ".yml")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)  # the block markers; handler text has its own escaped
_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70em; margin: 1em auto; padding: 0 1em; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
img { max-width: 100%; }
blockquote { border-left: 3px solid #ccc; margin-left: 0; padding-left: 1em; color: #444; }
span.path { border-bottom: 1px dotted #888; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def findings_html(markdown_path: Path) -> str:
    """A FINDINGS file as one self-contained HTML page, stamped with the digest of the text it was
    made from (see write_findings_html)."""
    from markdown_it import MarkdownIt

    source = markdown_path.read_text(encoding="utf-8")
    text = _COMMENT.sub("", source)
    parser = MarkdownIt("commonmark", {"html": False}).enable("table").enable("strikethrough")
    tokens = parser.parse(text)
    folder = markdown_path.parent
    for token in tokens:
        for child in token.children or []:
            if child.type == "image":
                child.attrs["src"] = _embedded(folder, str(child.attrs.get("src") or ""))
            elif child.type == "link_open" and _is_local(str(child.attrs.get("href") or "")):
                child.type, child.content = "html_inline", f'<span class="path" title="{html.escape(str(child.attrs["href"]))}">'
            elif child.type == "link_close" and _closes_local(token.children or [], child):
                child.type, child.content = "html_inline", "</span>"
    body = parser.renderer.render(tokens, parser.options, {})
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), markdown_path.name)
    return (f"<!DOCTYPE html>\n{_stamp(source)}\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head>\n<body>\n{body}</body></html>\n")


def _stamp(source: str) -> str:
    return f"<!-- made by labrunner from FINDINGS text sha256 {hashlib.sha256(source.encode('utf-8')).hexdigest()} -->"


def _is_local(href: str) -> bool:
    return bool(href) and not re.match(r"^[a-z][a-z0-9+.-]*:|^#", href, re.IGNORECASE)


def _closes_local(children: list[Any], closing: Any) -> bool:
    """Whether a link_close ends a local link: links do not nest, so it is the last link_open before it."""
    opened = None
    for child in children:
        if child is closing:
            break
        if child.type == "link_open" or (child.type == "html_inline" and child.content.startswith('<span class="path"')):
            opened = child
    return opened is not None and opened.type == "html_inline"


def _embedded(folder: Path, src: str) -> str:
    """A local image as a data: URI, so the page needs nothing beside it."""
    if not _is_local(src):
        return src
    path = folder / src
    mime, _ = mimetypes.guess_type(path.name)
    try:
        if mime is None or not mime.startswith("image/") or path.stat().st_size > EMBED_MAX_BYTES:
            return src
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return src
    return f"data:{mime};base64,{data}"


def write_findings_html(markdown_path: Path, html_path: Path) -> bool:
    """Write the HTML twin of a FINDINGS file unless it was made from the same text; True if
    written. The end of every run asks (labrunner.writeup), so the unchanged case costs one read of
    each file and no rendering. (The images it embeds change with the text: a plot is redrawn only
    with its results, and the text says when they were made.)"""
    html_path = Path(html_path)
    stamp = _stamp(Path(markdown_path).read_text(encoding="utf-8"))
    try:
        with html_path.open(encoding="utf-8") as handle:
            if handle.readline() and handle.readline().rstrip("\n") == stamp:
                return False
    except OSError:
        pass  # not made yet
    text = findings_html(Path(markdown_path))
    atomic_write_text(html_path, text)
    return True


def gather_artifacts(results: Mapping[str, Any], folder: Path, root: Path) -> list[Path]:
    """The artifacts of the current results that a report page can show (by type, and at most
    REPORT_ARTIFACT_MAX_BYTES each), linked into `folder` as <sub>__[seed-<n>__]<name>. The folder
    is the rule's output: made even when empty, and emptied of what the results no longer have."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    gathered = []
    for sub_id, sub in (results.get("subs") or {}).items():
        for run in sub.get("seeds") or [sub]:
            if run.get("status", sub.get("status")) != "completed":
                continue
            for artifact in run.get("artifacts") or []:
                source = root / artifact
                if source.suffix.lower() not in REPORT_ARTIFACT_SUFFIXES or not source.is_file():
                    continue
                if source.stat().st_size > REPORT_ARTIFACT_MAX_BYTES:
                    continue
                seed = f"seed-{run.get('seed')}__" if sub.get("seeds") else ""
                target = folder / f"{sub_id}__{seed}{_name_in_run(artifact, run).replace('/', '__')}"
                link_or_copy(source, target)
                gathered.append(target)
    return gathered


def _name_in_run(artifact: str, run: Mapping[str, Any]) -> str:
    """The artifact's name as the handler saved it (it may have folders), below artifacts/."""
    base = Path(str(run.get("result_file") or "")).parent / "artifacts"
    try:
        return Path(artifact).relative_to(base).as_posix()
    except ValueError:
        return Path(artifact).name

