"""Turn what handlers log and return into plain Python values, and check the return shape.

Handlers hand over torch tensors (on a GPU, requiring grad), numpy scalars and arrays, nested
dicts. Converting them here means the classic `.detach()`, `.cpu()` and "not JSON serializable"
failures cannot happen in a handler's bookkeeping. torch and numpy are recognised by their type's
module, never imported: a handler that uses neither must not pay for them.
"""

from __future__ import annotations

import datetime as _dt
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labrunner.errors import HandlerReturnError, MetricError

__all__ = ["HandlerOutput", "device_scalar", "is_finite_number", "to_number", "to_plain", "validate_return"]

RETURN_SHAPE = "{'finding': 'one sentence', 'metrics': {'name': number, ...}, 'artifacts': [paths from runner.results]}"


def _is_torch_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def device_scalar(value: Any) -> Any | None:
    """The detached tensor when `value` is one real number held on an accelerator (CUDA, MPS),
    else None. Only the tensor's metadata is looked at: reading its value would make the CPU
    wait for the device, which is what a caller asking this wants to put off."""
    if not _is_torch_tensor(value) or value.device.type == "cpu" or value.numel() != 1:
        return None
    dtype = value.dtype
    if dtype.is_complex or str(dtype) == "torch.bool":  # not a metric: converted, and refused, at once
        return None
    return value.detach()


def _is_numpy(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "tolist")


_PLAIN = (bool, int, float, str)  # exactly these types, not subclasses
# struct formats of the narrow float types: their values are shown by their shortest decimal
_NARROW_TORCH = {"torch.float32": "f", "torch.float16": "e", "torch.bfloat16": "f"}  # bfloat16 fits in float32
_NARROW_NUMPY = {4: "f", 2: "e"}  # itemsize -> struct format
_FIRST_DIGITS = {"f": 6, "e": 3}  # %g drops trailing zeros: starting here still finds the shortest


def _shortest(value: Any, fmt: str) -> Any:
    """A float32 (or float16) value as the shortest decimal that reads back as the same value:
    0.98 rather than 0.9800000190734863, so records and tables show what the model computed."""
    if isinstance(value, list):
        return [_shortest(item, fmt) for item in value]
    if not isinstance(value, float) or not math.isfinite(value):
        return value
    for digits in range(_FIRST_DIGITS[fmt], 10):
        candidate = float(f"{value:.{digits}g}")
        try:
            if struct.unpack(fmt, struct.pack(fmt, candidate))[0] == value:
                return candidate
        except OverflowError:  # rounded past the type's largest value (65504 -> 7e4 in float16)
            continue
    return value


def to_plain(value: Any, where: str = "value") -> Any:
    """Plain YAML/JSON-safe data: dict, list, str, int, float (NaN/inf kept), bool, None."""
    if value is None or type(value) in _PLAIN:
        return value
    if _is_torch_tensor(value):
        value = value.detach().cpu()
        plain = value.item() if value.numel() == 1 and value.dim() == 0 else value.tolist()
        fmt = _NARROW_TORCH.get(str(value.dtype))
        return _shortest(plain, fmt) if fmt else plain
    if _is_numpy(value):  # before the subclass check: numpy.float64 and numpy.str_ subclass float, str
        plain = value.tolist()  # numpy scalars and arrays alike
        dtype = getattr(value, "dtype", None)
        fmt = _NARROW_NUMPY.get(dtype.itemsize) if dtype is not None and dtype.kind == "f" else None
        return _shortest(plain, fmt) if fmt else plain
    if isinstance(value, str):  # str enums and other subclasses: YAML writes only the exact types
        return str.__str__(value)  # the text itself, not the subclass's __str__
    if isinstance(value, (int, float)):  # IntEnum and other subclasses
        return int(value) if isinstance(value, int) else float(value)
    if isinstance(value, Mapping):
        return {str(key): to_plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item):  # jax arrays, other array scalars
        return to_plain(value.item(), where)
    raise HandlerReturnError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which cannot be stored; "
        "convert it to a number, text, list or dict (or save it with runner.results.save_artifact)"
    )


def to_number(value: Any, where: str) -> float | int:
    """One metric value as a Python number; anything else is a MetricError saying what it got."""
    plain = to_plain(value, where) if not isinstance(value, (bool, str)) else value
    if isinstance(plain, list) and len(plain) == 1:
        plain = plain[0]
    if isinstance(plain, bool) or not isinstance(plain, (int, float)):
        shape = f"a list of {len(plain)} values" if isinstance(plain, list) else f"{plain!r}"
        raise MetricError(f"{where} must be a single number, got {shape}")
    return plain


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class HandlerOutput:
    """A handler's return value, checked and converted."""

    finding: str
    metrics: dict[str, float | int]
    artifacts: list[str]
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def validate_return(value: Any, resolve_artifact: Callable[[Any], str]) -> HandlerOutput:
    """Check a handler's return value; raise HandlerReturnError saying exactly what was expected.

    `resolve_artifact` maps a returned artifact to its recorded name, raising HandlerReturnError
    when it was not saved through runner.results.
    """
    if value is None:
        raise HandlerReturnError(f"the handler returned None (is a `return` missing?); expected a dict like {RETURN_SHAPE}")
    if not isinstance(value, Mapping):
        raise HandlerReturnError(f"the handler returned a {type(value).__name__}; expected a dict like {RETURN_SHAPE}")
    finding = value.get("finding")
    if finding is None:
        keys = ", ".join(map(str, value)) or "none"
        raise HandlerReturnError(f"the returned dict has no 'finding' (keys: {keys}); expected {RETURN_SHAPE}")
    if not isinstance(finding, str) or not finding.strip():
        raise HandlerReturnError(f"'finding' must be a non-empty sentence saying what was found, got {finding!r}")
    metrics_in = value.get("metrics") or {}
    if not isinstance(metrics_in, Mapping):
        raise HandlerReturnError(f"'metrics' must be a dict of name -> number, got a {type(metrics_in).__name__}")
    metrics: dict[str, float | int] = {}
    warnings: list[str] = []
    for name, metric in metrics_in.items():
        try:
            number = to_number(metric, f"metric {name!r}")
        except MetricError as exc:
            raise HandlerReturnError(f"{exc}; every value in 'metrics' must be one number") from None
        if not math.isfinite(number):
            warnings.append(f"metric {name!r} is {number} (kept, and judged invalid against its criteria)")
        metrics[str(name)] = number
    artifacts_in = value.get("artifacts") or []
    if isinstance(artifacts_in, (str, Path)):
        artifacts_in = [artifacts_in]
    if not isinstance(artifacts_in, (list, tuple)):
        raise HandlerReturnError(f"'artifacts' must be a list of paths returned by runner.results, got a {type(artifacts_in).__name__}")
    artifacts = [resolve_artifact(item) for item in artifacts_in]
    extra = {str(k): to_plain(v, f"return value {k!r}") for k, v in value.items() if k not in ("finding", "metrics", "artifacts")}
    return HandlerOutput(finding=finding.strip(), metrics=metrics, artifacts=artifacts, extra=extra, warnings=warnings)
