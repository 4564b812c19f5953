"""Backends beyond the local one, each in a module of its own, so that `import labrunner` never
imports a cloud SDK: `labrunner.backends.modal_backend` runs sub-experiments on Modal GPUs.

This package itself stays light: the CLI reads `PROJECT_ROOT_ENV` from here before it imports
the Modal module, whose image is built from that folder at import time.
"""

from __future__ import annotations

__all__ = ["PROJECT_ROOT_ENV"]

PROJECT_ROOT_ENV = "LABRUNNER_PROJECT_ROOT"  # the project whose handlers the Modal image carries
