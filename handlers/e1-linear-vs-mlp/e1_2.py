"""e1_2: the MLP, with a paired logistic-regression baseline trained on the same seed.

The claim is "the MLP beats logistic regression", so this sub also reports `accuracy_gain`:
MLP accuracy minus that of a baseline with e1_1's settings (hidden 0, `baseline_lr`) trained
with the same seed, data order and epochs. Pairing by seed takes the seed-to-seed noise out of
the comparison, and the plan can put a criterion on the gain itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from handlers.common import describe, save_artifacts, train_and_evaluate

if TYPE_CHECKING:
    from labrunner import ExperimentRunner


def e1_2(runner: ExperimentRunner) -> dict:
    params = runner.params
    mlp = train_and_evaluate(runner)
    baseline = train_and_evaluate(runner, {**params, "hidden": 0, "lr": params["baseline_lr"]}, log_prefix="baseline_")
    gain = mlp.accuracy - baseline.accuracy
    model = describe(params)
    return {
        "finding": (
            f"The {model} reaches {mlp.accuracy:.1%} test accuracy, {gain * 100:+.2f} points against "
            f"logistic regression trained with the same seed ({baseline.accuracy:.1%}); "
            f"ECE {mlp.ece:.3f} against {baseline.ece:.3f}."
        ),
        "metrics": {
            **mlp.metrics(),
            "baseline_accuracy": baseline.accuracy,
            "baseline_test_loss": baseline.test_loss,
            "baseline_ece": baseline.ece,
            "accuracy_gain": gain,
        },
        "artifacts": save_artifacts(
            runner, {model: mlp, "logistic regression": baseline}, f"e1_2: {model} vs linear, seed {runner.seed}"
        ),
    }
