"""e1_1: the linear baseline, multinomial logistic regression as a single torch linear layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from handlers.common import describe, save_artifacts, train_and_evaluate

if TYPE_CHECKING:
    from labrunner import ExperimentRunner


def e1_1(runner: ExperimentRunner) -> dict:
    model = describe(runner.params)
    result = train_and_evaluate(runner)
    return {
        "finding": (
            f"{model.capitalize()} reaches {result.accuracy:.1%} test accuracy on the 450 held-out digits "
            f"(test loss {result.test_loss:.3f}, ECE {result.ece:.3f})."
        ),
        "metrics": result.metrics(),
        "artifacts": save_artifacts(runner, {model: result}, f"e1_1: {model}, seed {runner.seed}"),
    }
