"""Keep secrets out of everything labrunner writes and prints.

Records never include the environment, but a handler's output, its error message, its finding or
a traceback can echo a token (a failing HTTP call, a debug print). So the values of environment
variables whose names say they are secret are replaced by `***` before any text reaches run.log,
a record, a FINDINGS file or the console:

- names: any containing KEY, TOKEN, SECRET, PASSWORD, PASSWD, PASSPHRASE, CREDENTIAL or PRIVATE
  (WANDB_API_KEY, HF_TOKEN, MODAL_TOKEN_SECRET, DB_PASSWORD, DEPLOY_PRIVATE_KEY, ...);
- a value of 8 characters or more is masked wherever it appears; a shorter one (3 to 7) only
  where it stands as a whole word, and only when a whole part of the name says secret (HF_TOKEN,
  DB_PASSWORD, SMTP_PASS; not TOKENIZERS_PARALLELISM): masking `false` or `abc` inside other
  words would garble every log;
- a multi-line value (a PEM or SSH private key) line by line as well as whole, since output
  reaches run.log a line at a time;
- the forms a value takes when a program escapes it: json.dumps, repr, URL-encoding, and JSON
  of those (a `\\` or `"` inside the value is escaped there).

What cannot be masked is listed in the README: values of under 3 characters, true/false-like
settings and existing absolute paths (they are not secrets), a secret that is not in the
environment (read from a file), and a value transformed in any other way (base64, split, hashed,
folded over lines by a YAML or pretty printer).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "redact", "redact_data", "secret_values"]

MASK = "***"
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE", re.IGNORECASE)
# a whole part of the name (split at anything but letters and digits) that says secret
_SECRET_WORDS = frozenset({"KEY", "KEYS", "APIKEY", "TOKEN", "TOKENS", "SECRET", "SECRETS", "PASSWORD", "PASSWORDS",
                           "PASSWD", "PASS", "PASSPHRASE", "CREDENTIAL", "CREDENTIALS", "PRIVATE"})
_ANYWHERE_CHARS = 8  # values at least this long are masked wherever they appear
_WHOLE_WORD_CHARS = 3  # shorter values than this are never masked: they would mask ordinary text
_SETTINGS = frozenset({"true", "false", "yes", "no", "on", "off", "none", "null"})


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values to mask, from the environment: see the module docstring for which."""
    env = os.environ if environ is None else environ
    values = set()
    for name, value in env.items():
        if not _SECRET_NAME.search(name) or len(value.strip()) < _WHOLE_WORD_CHARS or _is_setting(value):
            continue
        if len(value) >= _ANYWHERE_CHARS or "\n" in value or _says_secret(name):
            values.add(value)
    return sorted(values, key=len, reverse=True)


def _says_secret(name: str) -> bool:
    return any(part in _SECRET_WORDS for part in re.split(r"[^A-Za-z0-9]+", name.upper()))


def _is_setting(value: str) -> bool:
    """A switch or a path, not a secret: masking it would garble records (every path in them)."""
    stripped = value.strip()
    return stripped.lower() in _SETTINGS or (os.path.isabs(stripped) and os.path.exists(stripped))


def redact(text: str, secrets: list[str] | None = None) -> str:
    pattern = _pattern(tuple(secret_values() if secrets is None else secrets))
    return pattern.sub(MASK, text) if pattern is not None else text


def redact_data(data: Any, secrets: list[str] | None = None) -> Any:
    """Redact every string inside plain data (dicts, lists), keys included."""
    secrets = secret_values() if secrets is None else secrets
    if not secrets:
        return data
    if isinstance(data, str):
        return redact(data, secrets)
    if isinstance(data, Mapping):
        return {redact_data(key, secrets): redact_data(value, secrets) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(item, secrets) for item in data]
    return data


@lru_cache(maxsize=16)  # the output pump calls this for every line with the same secrets
def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regular expression for every form of every secret, longest first, so that a whole
    key is masked before the lines it is made of."""
    forms: dict[str, bool] = {}  # text -> masked only as a whole word
    for value in secrets:
        for piece in _pieces(value):
            for form in _escaped_forms(piece):
                if len(form) >= _WHOLE_WORD_CHARS:
                    forms[form] = forms.get(form, True) and len(piece) < _ANYWHERE_CHARS
    if not forms:
        return None
    alternatives = [re.escape(form) if not whole_word else rf"(?<![A-Za-z0-9]){re.escape(form)}(?![A-Za-z0-9])"
                    for form, whole_word in sorted(forms.items(), key=lambda item: len(item[0]), reverse=True)]
    return re.compile("|".join(alternatives))


def _pieces(value: str) -> Iterable[str]:
    """The value, and each line of a multi-line one (a PEM key reaches run.log line by line)."""
    yield value
    if "\n" in value:
        for line in value.splitlines():
            line = line.strip()
            if len(line) >= _WHOLE_WORD_CHARS and line.lower() not in _SETTINGS:
                yield line


def _escaped_forms(text: str) -> set[str]:
    """How a program may print `text`: as is, json.dumps, repr, URL-encoded, and JSON of those."""
    forms = {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1], repr(text)[1:-1],
             quote(text, safe=""), quote_plus(text, safe="")}
    forms |= {json.dumps(form)[1:-1] for form in list(forms)}  # a JSON string inside a JSON string, or a logged repr
    return forms
