"""The exceptions labrunner raises, all under one root.

    LabrunnerError                   anything labrunner raises on purpose
    ├── InputError                   something a person wrote is invalid; `.issues` lists each
    │   │                            problem with its file, key path and line
    │   ├── PlanError                research_plan.yaml, or a handler file it names, is invalid
    │   ├── RecordError              a result or failure record on disk is unreadable or corrupt
    │   ├── FindingsError            a FINDINGS.md has broken labrunner markers
    │   └── ConfigError              a `--config` value or a target on the command line is invalid
    ├── HandlerError                 a handler used the runner API wrongly
    │   ├── HandlerReturnError       ...returned a value of the wrong shape
    │   ├── MetricError              ...logged a metric that is not a number
    │   └── ArtifactError            ...named an artifact outside its folder, or writing it failed
    ├── BackendError                 a backend could not run a job (no Modal token, ...)
    ├── RunRefusedError              a run was not started, and nothing was changed
    │   ├── RunLockedError           ...another attempt of the same run holds its lock
    │   └── RunHeldError             ...it waits for a dependency or a gate that is not passed
    └── StorageError                 labrunner could not write one of its files (no space left on
                                     device, a read-only folder, a folder where a file belongs);
                                     an OSError too

Errors raised inside a handler's process become failure records, never tracebacks of ours: the
message of each class here is written to be read by the researcher as it stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ArtifactError",
    "BackendError",
    "ConfigError",
    "FindingsError",
    "HandlerError",
    "HandlerReturnError",
    "InputError",
    "Issue",
    "LabrunnerError",
    "MetricError",
    "PlanError",
    "RecordError",
    "RunHeldError",
    "RunLockedError",
    "RunRefusedError",
    "StorageError",
]


class LabrunnerError(Exception):
    """Root of every exception labrunner raises on purpose."""


@dataclass(frozen=True)
class Issue:
    """One problem in a file a person wrote: where it is and what was expected."""

    file: str
    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class InputError(LabrunnerError):
    """Raised when a file or argument a person wrote is invalid; lists every problem at once."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues: tuple[Issue, ...] = tuple(issues)
        super().__init__(self._summary())

    def _summary(self) -> str:
        if len(self.issues) == 1:
            return str(self.issues[0])
        lines = [f"{len(self.issues)} problems:"] + [f"  - {issue}" for issue in self.issues]
        return "\n".join(lines)

    @classmethod
    def single(cls, file: str | Path, key: str, message: str, line: int | None = None) -> "InputError":
        return cls([Issue(str(file), key, message, line)])


class PlanError(InputError):
    """Raised when research_plan.yaml, or a handler it names, is invalid (before any job starts)."""


class RecordError(InputError):
    """Raised when a result or failure record on disk cannot be read back (truncated, edited)."""


class FindingsError(InputError):
    """Raised when a FINDINGS.md has unpaired, nested or repeated labrunner markers; the file is
    left untouched, since regenerating around broken markers could overwrite a person's text."""


class ConfigError(InputError):
    """Raised for a bad `--config` key or value, or a target naming an unknown experiment."""


class HandlerError(LabrunnerError):
    """Raised inside a handler's process when the handler uses the runner API wrongly."""


class HandlerReturnError(HandlerError):
    """Raised when a handler returns something other than {'finding': str, 'metrics': {...}}."""


class MetricError(HandlerError):
    """Raised when `log_metrics` or a returned metric holds something that is not a number."""


class ArtifactError(HandlerError):
    """Raised when an artifact name escapes the artifacts folder or the file cannot be written."""


class BackendError(LabrunnerError):
    """Raised when a backend cannot run a job at all (no Modal token, unknown GPU type, ...)."""


class RunRefusedError(LabrunnerError):
    """Raised when `labrunner run` does not start a run; its message says why and what to do."""


class RunLockedError(RunRefusedError):
    """Raised when another attempt of the same run (a Snakemake job or a hand run) holds its lock."""


class RunHeldError(RunRefusedError):
    """Raised when a sub's experiment waits for a dependency that has not completed, or for a gate
    that has not passed (unless gates are ignored for the run)."""


class StorageError(LabrunnerError, OSError):
    """Raised when labrunner cannot write one of its own files: no space left on device (with how
    much was free), a read-only folder, a folder where the file belongs. It is an OSError as well,
    so code that already handles OSError (an artifact write, say) handles it too."""

    def __init__(self, path: str | Path, reason: str, errno_code: int | None = None) -> None:
        OSError.__init__(self, errno_code, reason, str(path))
        self.path, self.reason = str(path), reason

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"
