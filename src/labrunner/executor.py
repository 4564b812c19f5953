"""Which executor's job runs this process, as that executor names it.

Every result and failure record carries it, so that a record leads to the scheduler's own view of
the job: `sacct -j <job_id>` says whether SLURM cancelled it, or stopped it for time or memory.
The backend (where the handler runs: local, or a Modal call) is recorded beside it.
"""

from __future__ import annotations

import os
import platform

__all__ = ["current_executor"]


def current_executor() -> dict[str, str]:
    """{"name": "slurm", "job_id": ..., "node": ...} inside a SLURM job (the Snakemake SLURM
    executor, or `labrunner run` under sbatch/srun); else {"name": "local", "node": <host>}:
    no scheduler that labrunner recognises started this process."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id:
        return {"name": "slurm", "job_id": job_id, "node": os.environ.get("SLURMD_NODENAME") or platform.node()}
    return {"name": "local", "node": platform.node()}
