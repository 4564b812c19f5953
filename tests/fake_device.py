"""A fake CUDA (and MPS) device for machines without one: tensor-like stubs that record every call
that makes the CPU wait for the device, and a GPU whose progress the test drives.

It stands in for the hardware only. labrunner's code runs as it would on a GPU: it calls
torch.empty(..., pin_memory=True), Tensor.copy_(..., non_blocking=True), torch.cuda.Event and
torch.cuda.current_stream, which `install` points at the fakes here. Tests use it in their own
process (through monkeypatch) and in a handler's process (a copy of this file beside the handler).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class FakeGpu:
    """Work is queued in order and completes when the test says so (`catch_up`)."""

    def __init__(self) -> None:
        self.queued = 0
        self.completed = 0
        self.waits: list[str] = []  # every call that made (or would make) the CPU wait for the GPU
        self.copies: list[dict[str, bool]] = []  # device-to-host copies: pinned? non_blocking?
        self.early_reads = 0  # host memory read before the copy into it had landed: a wrong value

    def enqueue(self) -> int:
        self.queued += 1
        return self.queued

    def catch_up(self, upto: int | None = None) -> None:
        self.completed = self.queued if upto is None else max(self.completed, min(upto, self.queued))

    def wait(self, what: str, upto: int | None = None) -> None:
        self.waits.append(what)
        self.catch_up(upto)


GPU = FakeGpu()


class FakeDevice:
    def __init__(self, kind: str) -> None:
        self.type = kind
        self.index = 0 if kind != "cpu" else None


class FakeDeviceTensor:
    """A one-number tensor on a GPU. Reading it in any way waits for the GPU, and is recorded."""

    __module__ = "torch.fake"  # labrunner recognises torch tensors by their type's module

    def __init__(self, value: float, device: str = "cuda", dtype: Any = torch.float32) -> None:
        self.value = value
        self.device = FakeDevice(device)
        self.dtype = dtype
        self.shape = torch.Size([])

    def detach(self) -> "FakeDeviceTensor":
        return self

    def numel(self) -> int:
        return 1

    def dim(self) -> int:
        return 0

    def add_(self, other: float) -> "FakeDeviceTensor":
        """In place, queued on the GPU: a copy queued before it still sees the old value."""
        self.value += other
        GPU.enqueue()
        return self

    def clone(self) -> "FakeDeviceTensor":
        GPU.enqueue()
        return FakeDeviceTensor(self.value, self.device.type, self.dtype)

    def item(self) -> float:
        GPU.wait(f"{self.device.type} tensor .item()")
        return self.value

    def cpu(self) -> "FakeHostTensor":
        GPU.wait(f"{self.device.type} tensor .cpu()")
        host = FakeHostTensor(self.dtype, pinned=False)
        host.value, host.lands_at = self.value, 0
        return host

    def to(self, *args: Any, non_blocking: bool = False, **kwargs: Any) -> Any:
        if not non_blocking:
            GPU.wait(f"{self.device.type} tensor .to() without non_blocking")
        return self.cpu()

    def tolist(self) -> float:
        GPU.wait(f"{self.device.type} tensor .tolist()")
        return self.value

    def numpy(self) -> float:
        GPU.wait(f"{self.device.type} tensor .numpy()")
        return self.value

    def __float__(self) -> float:
        return float(self.item())

    def __bool__(self) -> bool:
        return bool(self.item())


class FakeHostTensor:
    """Host memory a device value is copied into; reading it before the copy landed is recorded."""

    __module__ = "torch.fake"
    device = FakeDevice("cpu")
    shape = torch.Size([])

    def __init__(self, dtype: Any, pinned: bool) -> None:
        self.dtype = dtype
        self.pinned = pinned
        self.value: float | None = None
        self.lands_at = 0

    def copy_(self, source: FakeDeviceTensor, non_blocking: bool = False) -> "FakeHostTensor":
        GPU.copies.append({"pinned": self.pinned, "non_blocking": non_blocking})
        self.value = source.value  # the value as of this point in the GPU's queue
        self.lands_at = GPU.enqueue()
        if not non_blocking:
            GPU.wait("blocking copy_ from the device", upto=self.lands_at)
        return self

    def detach(self) -> "FakeHostTensor":
        return self

    def cpu(self) -> "FakeHostTensor":
        return self

    def numel(self) -> int:
        return 1

    def dim(self) -> int:
        return 0

    def item(self) -> float | None:
        if GPU.completed < self.lands_at:
            GPU.early_reads += 1
        return self.value


class FakeEvent:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.at = 0

    def record(self, stream: Any = None) -> None:
        self.at = GPU.queued

    def query(self) -> bool:
        return GPU.completed >= self.at

    def synchronize(self) -> None:
        GPU.wait("event.synchronize()", upto=self.at)


def install(set_attr: Callable[[Any, str, Any], None] = setattr) -> FakeGpu:
    """Point torch's CUDA entry points that labrunner uses at a fresh fake GPU; returns it.
    `set_attr` is monkeypatch.setattr in a test's own process, plain setattr in a handler's."""
    global GPU
    GPU = FakeGpu()
    real_empty = torch.empty

    def empty(*size: Any, pin_memory: bool = False, **kwargs: Any) -> Any:
        if kwargs.get("device") in ("cpu", None) and kwargs.get("dtype") is not None and pin_memory:
            return FakeHostTensor(kwargs["dtype"], pinned=True)
        return real_empty(*size, pin_memory=pin_memory, **kwargs)

    set_attr(torch, "empty", empty)
    set_attr(torch.cuda, "Event", FakeEvent)
    set_attr(torch.cuda, "current_stream", lambda device=None: object())
    set_attr(torch.cuda, "synchronize", lambda device=None: GPU.wait("torch.cuda.synchronize()"))
    return GPU
