"""Unit tests for labrunner.hints: the common failures, raised for real, get their one-line fix."""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable

import numpy as np
import pytest
import torch

from labrunner.hints import hint_for


def raised(action: Callable[[], object]) -> tuple[str, str, str]:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - the point is to capture it
        return type(exc).__name__, str(exc), "".join(traceback.format_exception(exc))
    raise AssertionError("nothing was raised")


def _numpy_of_grad_tensor() -> object:
    return torch.ones(2, requires_grad=True).numpy()


def _json_of_numpy() -> object:
    return json.dumps({"acc": np.float32(0.9)})


def _shape_mismatch() -> object:
    return torch.nn.Linear(64, 10)(torch.ones(8, 32))


def _missing_key() -> object:
    return {"logits": 1}["probs"]


def _missing_package() -> object:
    import package_that_is_not_installed  # type: ignore[import-not-found]  # noqa: F401

    return None


def _missing_project_module() -> object:
    import handlers.utils_that_do_not_exist  # type: ignore[import-not-found]  # noqa: F401

    return None


@pytest.mark.parametrize(("action", "hint_start"), [
    (_numpy_of_grad_tensor, "call .detach() before .numpy()"),
    (_json_of_numpy, "return plain values"),
    (_shape_mismatch, "a shape mismatch"),
    (_missing_key, "the key is not in that mapping: print its keys"),
    (_missing_package, "install the missing package"),
    (_missing_project_module, "a project module was not found"),
    (lambda: 1 / 0, "a denominator was zero"),
    (lambda: open("/nonexistent/data.csv"), "a file was not found"),
])
def test_hints_real_errors_get_their_fix(action: Callable[[], object], hint_start: str) -> None:
    hint = hint_for(*raised(action))

    assert hint is not None and hint.startswith(hint_start), hint


@pytest.mark.parametrize(("error_type", "message", "hint_start"), [
    ("TypeError", "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first.",
     "move the tensor to the CPU first"),
    ("OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB", "the GPU ran out of memory"),
    ("RuntimeError", "CUDA error: out of memory", "the GPU ran out of memory"),
    ("UsageError", "api_key not configured (no-tty). call wandb.login(key=[your_api_key])", "W&B is not logged in"),
    ("AuthError", "Token missing. Could not authenticate client.", "Modal is not logged in here"),
    ("Timeout", "the handler ran past its timeout", "the handler ran past timeout_min"),
    ("Killed", "killed by SIGKILL", "killed by SIGKILL, most often the out-of-memory killer"),
    ("Crash", "crashed with SIGSEGV", "the process crashed in native code"),
    ("Interrupted", "stopped", "the run was stopped from outside"),
    ("ArtifactError", "could not write artifact 'a' to x: Permission denied", "the artifacts folder is not writable"),
    ("ArtifactError", "artifact name '../x' leaves the artifacts folder", "name artifacts with a relative path"),
])
def test_hints_known_messages(error_type: str, message: str, hint_start: str) -> None:
    hint = hint_for(error_type, message)

    assert hint is not None and hint.startswith(hint_start), hint


def test_hints_match_the_traceback_when_the_message_does_not() -> None:
    hint = hint_for("RuntimeError", "worker failed", "...\ntorch.OutOfMemoryError: CUDA out of memory\n")

    assert hint is not None and hint.startswith("the GPU ran out of memory")


def test_hints_unknown_error_has_no_hint() -> None:
    assert hint_for("ValueError", "learning rate must be positive") is None
