"""Which secrets are masked, in which forms; and what is left alone so that logs stay readable.
The end-to-end proof (a real Snakemake run, every file and the console) is in test_faults.py."""

from __future__ import annotations

import json
from urllib.parse import quote

from labrunner.redact import redact, redact_data, secret_values

KEY = "\n".join([
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
    "QyNTUxOQAAACBnZ2hqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODlhYmNkZWZnaGlqaw==",
    "-----END OPENSSH PRIVATE KEY-----",
    "",
])
ENV = {
    "HF_TOKEN": 'hf_Quote"And\\Backslash9',
    "DB_PASSWORD": "Pwq7!",
    "DEPLOY_PRIVATE_KEY": KEY,
    "TOKENIZERS_PARALLELISM": "false",  # a setting whose name merely contains TOKEN
    "MONKEY_MODE": "abc",  # KEY inside a word: a short value is not masked for it
    "SSH_KEY_PATH": "/",  # an existing path: not a secret, and masking it would garble every path
    "X_KEY": "ab",  # too short to mask without masking ordinary text
}


def test_redact_secret_values_follow_the_variable_names() -> None:
    values = secret_values(ENV)

    assert set(values) == {ENV["HF_TOKEN"], "Pwq7!", KEY}
    assert values[0] == KEY  # longest first: the whole key before the lines it is made of


def test_redact_multi_line_secret_is_masked_whole_and_line_by_line() -> None:
    secrets = secret_values(ENV)

    assert redact(f"key:\n{KEY}done", secrets) == "key:\n***done"
    for line in KEY.splitlines():
        if line:
            assert redact(f"[e1/a] {line}\n", secrets) == "[e1/a] ***\n", line


def test_redact_escaped_forms_are_masked() -> None:
    secrets = secret_values(ENV)
    token = ENV["HF_TOKEN"]

    for form in (json.dumps(token), repr(token), json.dumps({"t": token}), json.dumps(json.dumps(token)),
                 quote(token, safe=""), json.dumps(KEY), repr(KEY)):
        masked = redact(f"printed {form} here", secrets)
        assert token not in masked and "Backslash9" not in masked and "b3BlbnNzaC1r" not in masked, form
        assert "***" in masked


def test_redact_short_secret_is_masked_as_a_whole_word_only() -> None:
    secrets = secret_values(ENV)

    assert redact("password=Pwq7! and 'Pwq7!'", secrets) == "password=*** and '***'"
    assert redact("XPwq7!Y stays: part of a longer word", secrets) == "XPwq7!Y stays: part of a longer word"
    assert redact("false abc ab / stay", secrets) == "false abc ab / stay"


def test_redact_data_masks_keys_and_values() -> None:
    secrets = secret_values(ENV)

    data = redact_data({"finding": "used Pwq7!", "details": {ENV["HF_TOKEN"]: [KEY, 1.5]}}, secrets)

    assert data == {"finding": "used ***", "details": {"***": ["***", 1.5]}}
