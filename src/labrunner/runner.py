"""What a handler sees: `ExperimentRunner` and its `results`.

A runner lives in the handler's own process. Every metric is appended to metrics.jsonl and
flushed at once (a number still on a GPU as soon as the GPU has produced it, without making the
loop wait: see labrunner.metrics_log), so the metrics logged before a crash survive it; the
supervising process forwards them to W&B, which keeps W&B trouble out of the handler's process.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from labrunner.convert import to_plain
from labrunner.errors import ArtifactError, HandlerReturnError, MetricError
from labrunner.files import atomic_writer
from labrunner.jobspec import RunContext
from labrunner.metrics_log import MetricsLog

__all__ = ["ExperimentRunner", "Results", "RunContext", "detect_device", "seed_everything"]

T = TypeVar("T")
ARTIFACTS_DIR = "artifacts"
MAX_ARTIFACT_NAME_CHARS = 255


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (torch only where it is installed)."""
    random.seed(seed)
    if "numpy" in sys.modules or _installed("numpy"):
        import numpy

        numpy.random.seed(seed % 2**32)
    if "torch" in sys.modules or _installed("torch"):
        import torch

        torch.manual_seed(seed)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def detect_device() -> str:
    """cuda, mps or cpu; a handler that never touched torch ran on the cpu."""
    if "torch" not in sys.modules and not _installed("torch"):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


class Results:
    """Saves a handler's artifacts inside its artifacts folder, atomically."""

    def __init__(self, run_dir: Path) -> None:
        self._run_dir = Path(run_dir)
        self._dir = self._run_dir / ARTIFACTS_DIR
        self._saved: list[str] = []

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def saved(self) -> list[str]:
        """Artifacts saved so far, as paths relative to the run folder (artifacts/<name>)."""
        return list(self._saved)

    def save_artifact(self, name: str | os.PathLike[str], data: bytes | bytearray | str | os.PathLike[str]) -> Path:
        """Save bytes, text (a str is written as text) or a copy of a file (pass a Path)."""
        target = self._target(name)
        if isinstance(data, (bytes, bytearray, memoryview)):
            self._write(target, name, lambda handle: handle.write(bytes(data)))
        elif isinstance(data, str):
            self._write(target, name, lambda handle: handle.write(data.encode("utf-8")))
        elif isinstance(data, os.PathLike):
            source = Path(data)
            if not source.is_file():
                raise ArtifactError(f"artifact {str(name)!r}: the file to copy, {source}, does not exist")
            self._write(target, name, lambda handle: _copy_into(source, handle))
        else:
            raise ArtifactError(
                f"artifact {str(name)!r}: expected bytes, a str (saved as text) or a pathlib.Path to copy, "
                f"got a {type(data).__name__}; use save_json_artifact for data or save_figure for plots"
            )
        return target

    def save_json_artifact(self, name: str | os.PathLike[str], obj: Any) -> Path:
        """Save data as JSON; tensors and numpy values are converted first."""
        try:
            text = json.dumps(to_plain(obj, f"artifact {str(name)!r}"), indent=2, allow_nan=True)
        except HandlerReturnError as exc:
            raise ArtifactError(str(exc)) from None
        return self.save_artifact(name, text + "\n")

    def save_figure(self, name: str | os.PathLike[str], figure: Any, **savefig_kwargs: Any) -> Path:
        """Save a matplotlib figure; the format follows the extension (.png when there is none)."""
        name = str(name)
        if not PurePosixPath(name).suffix:
            name += ".png"
        buffer = io.BytesIO()
        savefig_kwargs.setdefault("dpi", 120)
        savefig_kwargs.setdefault("bbox_inches", "tight")
        try:
            figure.savefig(buffer, format=PurePosixPath(name).suffix.lstrip("."), **savefig_kwargs)
        except AttributeError:
            raise ArtifactError(f"artifact {name!r}: save_figure expects a matplotlib Figure, got a {type(figure).__name__}") from None
        path = self.save_artifact(name, buffer.getvalue())
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(figure)  # handlers that plot in a loop would otherwise leak figures
        return path

    def resolve(self, returned: Any) -> str:
        """The recorded name of an artifact a handler returned; it must have been saved here."""
        if not isinstance(returned, (str, os.PathLike)):
            raise HandlerReturnError(f"'artifacts' must hold paths returned by runner.results.save_*, got {returned!r}")
        path = Path(returned)
        candidates = [path] if path.is_absolute() else [self._run_dir / path, self._dir / path, Path.cwd() / path]
        for candidate in candidates:
            try:
                relative = candidate.resolve().relative_to(self._run_dir.resolve()).as_posix()
            except ValueError:
                continue
            if relative in self._saved:
                return relative
        saved = ", ".join(self._saved) or "none"
        raise HandlerReturnError(
            f"artifact {str(returned)!r} was not saved through runner.results (saved: {saved}); "
            "save it with runner.results.save_artifact / save_json_artifact / save_figure and return the path it gives"
        )

    def _target(self, name: str | os.PathLike[str]) -> Path:
        text = os.fspath(name) if isinstance(name, os.PathLike) else name
        if not isinstance(text, str) or not text.strip():
            raise ArtifactError(f"artifact name must be a non-empty relative path, got {name!r}")
        pure = PurePosixPath(text.replace("\\", "/"))
        if pure.is_absolute() or text.startswith(("/", "\\")) or (len(text) > 1 and text[1] == ":"):
            raise ArtifactError(f"artifact name {text!r} is absolute; expected a path inside the artifacts folder, e.g. 'plots/curve.png'")
        if not pure.parts:  # ".", "./.": PurePosixPath drops every part
            raise ArtifactError(f"artifact name {text!r} names no file; expected a path inside the artifacts folder, e.g. 'plots/curve.png'")
        if ".." in pure.parts:
            raise ArtifactError(f"artifact name {text!r} leaves the artifacts folder; '..' is not allowed")
        if "\0" in text:
            raise ArtifactError(f"artifact name {text!r} contains a NUL character")
        too_long = [part for part in pure.parts if len(part.encode("utf-8")) > MAX_ARTIFACT_NAME_CHARS]
        if too_long:
            raise ArtifactError(f"artifact name part {too_long[0][:40]!r}... is longer than {MAX_ARTIFACT_NAME_CHARS} bytes")
        return self._dir.joinpath(*pure.parts)

    def _write(self, target: Path, name: Any, write: Any) -> None:
        try:
            with atomic_writer(target) as handle:
                write(handle)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ArtifactError(f"could not write artifact {str(name)!r} to {target}: {reason}") from exc
        relative = target.relative_to(self._run_dir).as_posix()
        if relative not in self._saved:
            self._saved.append(relative)


def _copy_into(source: Path, handle: Any) -> None:
    with source.open("rb") as src:
        shutil.copyfileobj(src, handle)


class ExperimentRunner:
    """The one argument of every handler: params, seed, device, metrics, progress, results."""

    def __init__(self, context: RunContext) -> None:
        self._context = context
        self.experiment_id: str = context.experiment_id
        self.sub_id: str = context.sub_id
        self.params: dict[str, Any] = dict(context.params)
        self.seed: int = context.seed
        self.stub: bool = context.stub
        self.attempt: int = context.attempt
        self.run_dir = Path(context.run_dir)
        self.work_dir = self.run_dir / "work"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.results = Results(self.run_dir)
        self.warnings: list[str] = []
        self._device: str | None = None
        self._started = time.monotonic()
        self._metrics = MetricsLog(context.metrics_path, context.run_id, context.attempt, self.warnings)

    @property
    def device(self) -> str:
        """"cuda", "mps" or "cpu": what torch can use here."""
        if self._device is None:
            self._device = detect_device()
        return self._device

    def seed_everything(self, seed: int | None = None) -> None:
        seed_everything(self.seed if seed is None else seed)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record metrics (tensors and numpy accepted); NaN and inf are kept and flagged. A number
        on a GPU is not waited for: its line is written once the GPU has produced it."""
        if type(metrics) is not dict and not isinstance(metrics, Mapping):  # the cheap test first: a call per step
            raise MetricError(f"log_metrics expects a dict of name -> number, got a {type(metrics).__name__}")
        self._metrics.append(metrics, step, round(time.monotonic() - self._started, 3))

    def flush(self) -> None:
        """Write the metric lines still waiting for the GPU (waiting for it): the worker calls this
        when the handler returns; raises OSError when metrics.jsonl cannot be written."""
        self._metrics.flush()

    def progress(self, iterable: Iterable[T], desc: str | None = None, total: int | None = None,
                 every_s: float = 10.0) -> Iterator[T]:
        """Yield from `iterable`, printing a progress line at most every `every_s` seconds."""
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        label = desc or self.sub_id
        start = last = time.monotonic()
        count = 0
        for item in iterable:
            yield item
            count += 1
            now = time.monotonic()
            if now - last >= every_s:
                last = now
                print(_progress_line(label, count, total, now - start), flush=True)
        print(_progress_line(label, count, total, time.monotonic() - start), flush=True)

    def close(self) -> None:
        """Flush and close metrics.jsonl; never raises (what could not be written is a warning)."""
        self._metrics.close()


def _progress_line(label: str, count: int, total: int | None, elapsed_s: float) -> str:
    if total:
        eta_s = elapsed_s / count * (total - count) if count else float("nan")
        return f"{label}: {count}/{total} ({100 * count / total:.0f}%) {elapsed_s:.1f}s elapsed, ~{eta_s:.1f}s left"
    return f"{label}: {count} done, {elapsed_s:.1f}s elapsed"
