"""Keep secrets out of everything labrunner writes.

Records never include the environment, but a handler's output or traceback can echo a token
(a failing HTTP call, a debug print). Values of environment variables whose names say they are
secret are replaced before any text reaches run.log or a record.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["redact", "redact_data", "secret_values"]

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
_MIN_SECRET_CHARS = 8  # shorter values would redact ordinary words
MASK = "***"


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    values = {value for name, value in env.items() if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_CHARS}
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    for value in secret_values() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact_data(data: Any, secrets: list[str] | None = None) -> Any:
    """Redact every string inside plain data (dicts, lists)."""
    secrets = secret_values() if secrets is None else secrets
    if not secrets:
        return data
    if isinstance(data, str):
        return redact(data, secrets)
    if isinstance(data, Mapping):
        return {key: redact_data(value, secrets) for key, value in data.items()}
    if isinstance(data, list):
        return [redact_data(item, secrets) for item in data]
    return data
