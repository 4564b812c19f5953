"""What a run cost: wall time, GPU type and count, GPU-seconds, and an estimated price.

A record states the facts of its run (`compute:` in result.yaml and failure.yaml): how long its
attempts held their machine, which GPU and how many. The price is an estimate made when the
write-up is made, from the plan's `defaults.gpu_price_per_hour` or, for Modal runs, from Modal's
published rates below, so that correcting a price needs no rerun.

Modal bills GPU-seconds (and CPU and memory, not counted here) while a function's container
runs, start-up included: the estimate covers the GPU only and is a lower bound of the bill.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MODAL_GPU_PRICE_PER_HOUR", "MODAL_PRICES_SOURCE", "combine", "compute_facts", "describe", "estimate",
    "gpu_price_per_hour", "parse_gpu", "project_line", "total",
]

# USD per GPU-hour, Modal's published per-second rates x 3600 (https://modal.com/pricing: H100
# $0.001097/s, A100 80 GB $0.000694/s, L40S $0.000542/s, L4 $0.000222/s, T4 $0.000164/s), as
# quoted by https://techbytes.app/posts/serverless-gpu-pricing-matrix-modal-replicate-lambda-2026/
# ("prices verified on May 7, 2026 from official vendor pricing"); read here on 2026-11-27.
# Types without a price we could cite (B200, H200, A100 40 GB, A10) get none: set
# `defaults.gpu_price_per_hour` in the plan for them, and to correct any of these.
MODAL_GPU_PRICE_PER_HOUR: dict[str, float] = {
    "H100": 3.9492,
    "A100-80GB": 2.4984,
    "L40S": 1.9512,
    "L4": 0.7992,
    "T4": 0.5904,
}
MODAL_PRICES_SOURCE = "Modal's published rates (modal.com/pricing, as of 2026-05-07; read 2026-11-27)"
# Modal's other spellings of the same GPU (https://modal.com/docs/guide/gpu)
_MODAL_ALIASES = {"H100!": "H100", "A10G": "A10", "A100-40GB": "A100"}


def parse_gpu(setting: str | None) -> tuple[str | None, int]:
    """("A100", 2) for the plan's `gpu: A100:2`; (None, 0) for no GPU."""
    if not setting:
        return None, 0
    kind, _, count = setting.partition(":")
    return kind, int(count) if count.isdigit() else 1


def compute_facts(gpu_setting: str | None, stub: bool, attempts_s: float, environment: Mapping[str, Any]) -> dict[str, Any]:
    """A record's `compute`: `wall_s` is the time its attempts held their machine (every retry of
    the job, not the W&B start-up around them); the GPU is the plan's (stub runs ask for none),
    else the one the handler's process used (a local CUDA GPU the plan did not ask for)."""
    kind, count = parse_gpu(None if stub else gpu_setting)
    if kind is None and environment.get("gpu_name"):
        kind, count = str(environment["gpu_name"]), 1
    facts: dict[str, Any] = {"wall_s": round(attempts_s, 3), "gpu": kind, "gpu_count": count,
                             "gpu_s": round(attempts_s * count, 3)}
    return facts


def _key(gpu: str) -> str:
    upper = gpu.strip().upper()
    return _MODAL_ALIASES.get(upper, upper)


def gpu_price_per_hour(gpu: str | None, backend: str | None,
                       overrides: Mapping[str, float]) -> tuple[float, str] | None:
    """(USD per GPU-hour, where it comes from): the plan's table first (any backend), then Modal's
    published rates for Modal runs; None when no price is known."""
    if not gpu:
        return None
    key = _key(gpu)
    for name, price in overrides.items():
        if _key(name) == key:
            return float(price), "defaults.gpu_price_per_hour"
    if backend == "modal" and key in MODAL_GPU_PRICE_PER_HOUR:
        return MODAL_GPU_PRICE_PER_HOUR[key], MODAL_PRICES_SOURCE
    return None


def estimate(facts: Mapping[str, Any], backend: str | None, overrides: Mapping[str, float]) -> dict[str, Any]:
    """The facts with `cost_usd` (and the price used) where a price is known."""
    entry = dict(facts)
    price = gpu_price_per_hour(facts.get("gpu"), backend, overrides) if facts.get("gpu_s") else None
    if price is not None:
        per_hour, source = price
        entry.update(cost_usd=round(float(facts["gpu_s"]) / 3600.0 * per_hour, 6), price_per_hour=per_hour,
                     price_source=source)
    return entry


def total(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Runs, wall time, GPU-seconds per GPU type and the estimated cost over `entries` (records'
    `compute`, priced by `estimate`); GPU-seconds without a price are counted apart, so a total
    never looks complete when it is not."""
    return combine(_one_run(entry) for entry in entries)


def _one_run(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One record's `compute` as a total of one run."""
    seconds = float(entry.get("gpu_s") or 0.0)
    priced = entry.get("cost_usd") is not None
    return {"runs": 1, "wall_s": entry.get("wall_s"), "gpu_s": seconds, "cost_usd": entry.get("cost_usd"),
            "by_gpu": {str(entry["gpu"]): seconds} if seconds and entry.get("gpu") else {},
            "unpriced_gpu_s": 0.0 if priced else seconds}


def combine(summaries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The total of several `total`s (the experiments of a project; the runs of one, see total)."""
    runs, wall_s, gpu_s, cost_usd, unpriced_gpu_s, priced = 0, 0.0, 0.0, 0.0, 0.0, False
    by_gpu: dict[str, float] = {}
    for summary in summaries:
        runs += int(summary.get("runs") or 0)
        wall_s += float(summary.get("wall_s") or 0.0)
        gpu_s += float(summary.get("gpu_s") or 0.0)
        unpriced_gpu_s += float(summary.get("unpriced_gpu_s") or 0.0)
        if summary.get("cost_usd") is not None:
            cost_usd, priced = cost_usd + float(summary["cost_usd"]), True
        for name, seconds in (summary.get("by_gpu") or {}).items():
            by_gpu[name] = by_gpu.get(name, 0.0) + float(seconds)
    combined: dict[str, Any] = {"runs": runs, "wall_s": round(wall_s, 3), "gpu_s": round(gpu_s, 3),
                                "cost_usd": round(cost_usd, 6) if priced else None}
    if by_gpu:
        combined["by_gpu"] = {name: round(seconds, 3) for name, seconds in by_gpu.items()}
    if unpriced_gpu_s:
        combined["unpriced_gpu_s"] = round(unpriced_gpu_s, 3)
    return combined


def project_line(experiments: Mapping[str, Mapping[str, Any]]) -> str | None:
    """describe() of the compute of every experiment that ran something (results.yaml data by
    experiment); None when none did."""
    spent = [results["compute"] for results in experiments.values() if (results.get("compute") or {}).get("runs")]
    return describe(combine(spent)) if spent else None


def describe(summary: Mapping[str, Any]) -> str:
    """"3 runs, 41.2 s wall, 120 GPU-s (A100 120), est. $0.083": one line for FINDINGS and status."""
    parts = [f"{summary.get('runs', 0)} run{'s' if summary.get('runs') != 1 else ''}",
             f"{_seconds(summary.get('wall_s'))} wall"]
    gpu_s = float(summary.get("gpu_s") or 0.0)
    if gpu_s:
        by_gpu = summary.get("by_gpu") or {}
        detail = ", ".join(f"{name} {_seconds(seconds, unit=False)}" for name, seconds in by_gpu.items())
        parts.append(f"{_seconds(gpu_s, unit=False)} GPU-s" + (f" ({detail})" if len(by_gpu) > 1 else
                                                              f" on {next(iter(by_gpu))}" if by_gpu else ""))
    else:
        parts.append("no GPU")
    if summary.get("cost_usd") is not None:
        parts.append(f"est. ${summary['cost_usd']:.4g}")
    if summary.get("unpriced_gpu_s"):
        parts.append(f"{_seconds(summary['unpriced_gpu_s'], unit=False)} GPU-s without a price "
                     "(set defaults.gpu_price_per_hour)")
    return ", ".join(parts)


def _seconds(value: Any, unit: bool = True) -> str:
    seconds = float(value or 0.0)
    text = f"{seconds:.1f}" if seconds < 1000 or not math.isfinite(seconds) else f"{seconds:,.0f}"
    return f"{text} s" if unit else text
