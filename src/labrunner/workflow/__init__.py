"""The Snakemake workflow, shipped inside the package.

A project's own Snakefile is a few lines that include `snakefile()`, so every project runs the
workflow of the labrunner it has installed and an upgrade never leaves stale copies of the rules
behind. The profile template is what `labrunner init` writes to `profiles/default/`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PROFILE_TEMPLATE", "WORKFLOW_DIR", "snakefile"]

WORKFLOW_DIR = Path(__file__).resolve().parent
PROFILE_TEMPLATE = WORKFLOW_DIR / "profile" / "config.yaml"


def snakefile() -> str:
    """The packaged Snakefile, for a project's `include:`."""
    return str(WORKFLOW_DIR / "Snakefile")
