"""A test instrument of tests/test_slurm.py, active only where that test puts this folder on
PYTHONPATH: it holds a `labrunner run` back after its records are written, as a job that a cluster
cancels just as it finishes (the moment Snakemake then discards a complete result).

When <TINY_FLAGS>/<sub>.linger exists, `labrunner run <exp> <sub>` writes <sub>.finished (its
SLURM job id) at exit, once its result is written, and waits there until the flag is removed or it
is killed (at most LINGER_MAX_S). labrunner itself is unchanged: this runs after it has returned.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from pathlib import Path

LINGER_MAX_S = 120.0


def _linger(flag: Path) -> None:
    flag.with_suffix(".finished").write_text(os.environ.get("SLURM_JOB_ID", ""))
    deadline = time.monotonic() + LINGER_MAX_S
    while flag.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def _flag() -> Path | None:
    argv, flags = sys.argv, os.environ.get("TINY_FLAGS")
    if flags and len(argv) >= 4 and os.path.basename(argv[0]) == "labrunner" and argv[1] == "run":
        return Path(flags) / f"{argv[3]}.linger"
    return None


_FLAG = _flag()
if _FLAG is not None and _FLAG.exists():
    atexit.register(_linger, _FLAG)
