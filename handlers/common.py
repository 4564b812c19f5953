"""Shared code for the digits study: data, models, the train loop, calibration, plots, findings.

Importing this module is free: torch, scikit-learn and matplotlib are imported inside the
functions that need them, so labrunner can load and hash handlers without paying for torch.

The test split is fixed (`SPLIT_SEED`) and never depends on the run's seed, so every sub and
every seed is scored on the same 450 held-out images; the seed changes only the initialisation,
the batch order and, in data-efficiency runs, which training images are kept.

Figures are `matplotlib.figure.Figure` objects built without pyplot: no backend to select, no
global figure registry to leak, and PNGs are rendered by Agg on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import torch
    from matplotlib.figure import Figure

    from labrunner import ExperimentRunner

SPLIT_SEED = 0
TEST_FRACTION = 0.25
N_PIXELS = 64
N_CLASSES = 10
ECE_BINS = 15


@dataclass
class Digits:
    """Pixels as float32 in [0, 1] (the raw data is 0..16), labels as int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass
class RunResult:
    """Final test metrics of one trained model and its test-set probabilities (the per-epoch metrics
    are in metrics.jsonl, logged through the runner, and labrunner draws them)."""

    accuracy: float
    test_loss: float
    ece: float
    n_train: int
    probs: np.ndarray
    labels: np.ndarray

    def metrics(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "test_loss": self.test_loss, "ece": self.ece, "n_train": self.n_train}


@lru_cache(maxsize=1)
def load_split() -> Digits:
    """scikit-learn's bundled digits (1797 8x8 images, shipped with the package), 75/25 stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        (x / 16.0).astype("float32"), y.astype("int64"),
        test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED,
    )
    return Digits(x_tr, y_tr, x_te, y_te)


def subsample(data: Digits, fraction: float, seed: int) -> Digits:
    """Keep a stratified `fraction` of the training split; the test split is untouched."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return data
    from sklearn.model_selection import train_test_split

    x_keep, _, y_keep, _ = train_test_split(
        data.x_train, data.y_train, train_size=fraction, stratify=data.y_train, random_state=seed
    )
    return Digits(x_keep, y_keep, data.x_test, data.y_test)


def build_model(hidden: int) -> torch.nn.Module:
    """hidden == 0: multinomial logistic regression (one linear layer); else a one-hidden-layer MLP."""
    from torch import nn

    if hidden == 0:
        return nn.Linear(N_PIXELS, N_CLASSES)
    return nn.Sequential(nn.Linear(N_PIXELS, hidden), nn.ReLU(), nn.Linear(hidden, N_CLASSES))


def describe(params: dict[str, Any]) -> str:
    """Model name for titles and findings."""
    hidden = int(params["hidden"])
    return "logistic regression" if hidden == 0 else f"MLP (hidden {hidden})"


def train_and_evaluate(
    runner: ExperimentRunner, params: dict[str, Any] | None = None, log_prefix: str = ""
) -> RunResult:
    """Train `build_model(hidden)` with Adam on cross-entropy, then score it on the test split.

    Params (from `params`, default `runner.params`): hidden, epochs (or steps: the epochs that
    make about that many Adam steps on the data kept), lr, batch_size, weight_decay,
    train_fraction (default 1.0). Logs train_loss, test_loss and test_accuracy every epoch;
    `log_prefix` keeps a second model trained in the same run apart.
    """
    import torch
    import torch.nn.functional as F

    p = runner.params if params is None else params
    runner.seed_everything()
    if runner.device == "cpu":
        # A 64x128x10 network: extra threads cost more in synchronisation than they save,
        # and several sub-experiments may share the same cores.
        torch.set_num_threads(1)
    data = subsample(load_split(), float(p.get("train_fraction", 1.0)), runner.seed)
    device = torch.device(runner.device)
    x_tr, y_tr = torch.from_numpy(data.x_train).to(device), torch.from_numpy(data.y_train).to(device)
    x_te, y_te = torch.from_numpy(data.x_test).to(device), torch.from_numpy(data.y_test).to(device)

    model = build_model(int(p["hidden"])).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=float(p["lr"]), weight_decay=float(p.get("weight_decay", 0.0)))
    batch_size = int(p.get("batch_size", 64))
    order_rng = torch.Generator().manual_seed(runner.seed)
    epochs = int(p["epochs"]) if "epochs" in p else epochs_for_steps(int(p["steps"]), len(x_tr), batch_size)
    for epoch in runner.progress(range(epochs), desc=f"{log_prefix}epochs"):
        model.train()
        order = torch.randperm(len(x_tr), generator=order_rng).to(device)
        loss_sum = torch.zeros((), device=device)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(idx)
        test_loss, test_acc, _ = _evaluate(model, x_te, y_te)
        step = {"train_loss": loss_sum.item() / len(order), "test_loss": test_loss, "test_accuracy": test_acc}
        runner.log_metrics({log_prefix + name: value for name, value in step.items()}, step=epoch)

    test_loss, test_acc, probs = _evaluate(model, x_te, y_te)
    return RunResult(
        accuracy=test_acc,
        test_loss=test_loss,
        ece=expected_calibration_error(probs, data.y_test),
        n_train=len(data.y_train),
        probs=probs,
        labels=data.y_test,
    )


def epochs_for_steps(steps: int, n_train: int, batch_size: int) -> int:
    """Epochs that make about `steps` optimiser steps: fewer images must not also mean less training."""
    batches_per_epoch = -(-n_train // batch_size)
    return max(1, round(steps / batches_per_epoch))


def _evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, np.ndarray]:
    """Test loss, accuracy and softmax probabilities."""
    import torch
    import torch.nn.functional as F

    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = F.cross_entropy(logits, y).item()
        acc = (logits.argmax(dim=1) == y).float().mean().item()
        probs = torch.softmax(logits, dim=1).cpu().numpy()
    return loss, acc, probs


def calibration_bins(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS
) -> list[tuple[float, float, float, float]]:
    """(bin centre, share of samples, accuracy, mean confidence) for each non-empty confidence bin."""
    import numpy as np

    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            bins.append(
                ((lo + hi) / 2, float(in_bin.mean()), float(correct[in_bin].mean()), float(confidence[in_bin].mean()))
            )
    return bins


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE with equal-width confidence bins (Guo et al., 2017)."""
    return sum(share * abs(acc - conf) for _, share, acc, conf in calibration_bins(probs, labels, n_bins))


def confusion_matrix(result: RunResult) -> list[list[int]]:
    """Rows are true digits, columns predicted digits."""
    import numpy as np

    matrix = np.zeros((N_CLASSES, N_CLASSES), dtype=int)
    np.add.at(matrix, (result.labels, result.probs.argmax(axis=1)), 1)
    return matrix.tolist()


def reliability_figure(results: dict[str, RunResult], title: str) -> Figure:
    """One reliability diagram per labelled model: accuracy per confidence bin against the diagonal.

    Each bar is labelled with its number of test images: most sit in the top bin, and the
    sparse low-confidence bars are noisy.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(results), 4), layout="constrained")
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    for ax, (label, result) in zip(axes, results.items()):
        bins = calibration_bins(result.probs, result.labels)
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
        bars = ax.bar([b[0] for b in bins], [b[2] for b in bins], width=1.0 / ECE_BINS, edgecolor="black", alpha=0.7)
        ax.bar_label(bars, labels=[str(round(b[1] * len(result.labels))) for b in bins], fontsize="x-small")
        ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.06))
        ax.set_title(f"{label}: ECE {result.ece:.4f}")
    fig.suptitle(title)
    return fig


def save_artifacts(runner: ExperimentRunner, results: dict[str, RunResult], title: str) -> list[Path]:
    """Reliability diagrams and confusion matrices; the seed is in every name. (The learning curves
    are drawn by labrunner from what train_and_evaluate logs each epoch.)"""
    seed = runner.seed
    confusion = {
        label: {"rows": "true digit", "columns": "predicted digit", "matrix": confusion_matrix(result)}
        for label, result in results.items()
    }
    return [
        runner.results.save_figure(f"reliability_seed{seed}.png", reliability_figure(results, title)),
        runner.results.save_json_artifact(f"confusion_seed{seed}.json", confusion),
    ]
