"""e1_2: the MLP, one hidden layer, trained exactly as the e1_1 baseline is.

The claim "the MLP beats logistic regression" is judged by the plan's `accuracy_gain`
criterion, which compares this sub with e1_1 seed by seed (`compare:` with `paired_by: seed`):
both train with the same seeds, data order and number of steps, so pairing takes the
seed-to-seed noise out of the difference, and labrunner computes it, not this handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from handlers.common import describe, save_artifacts, train_and_evaluate

if TYPE_CHECKING:
    from labrunner import ExperimentRunner


def e1_2(runner: ExperimentRunner) -> dict:
    model = describe(runner.params)
    result = train_and_evaluate(runner)
    return {
        "finding": (
            f"The {model} reaches {result.accuracy:.1%} test accuracy on the 450 held-out digits "
            f"(test loss {result.test_loss:.3f}, ECE {result.ece:.3f})."
        ),
        "metrics": result.metrics(),
        "artifacts": save_artifacts(runner, {model: result}, f"e1_2: {model}, seed {runner.seed}"),
    }
