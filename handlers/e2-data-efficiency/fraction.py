"""e2_mlp: the e1_2 MLP trained on a stratified `train_fraction` of the training split.

The plan sweeps `train_fraction` (`grid:`), so this one handler runs once per fraction and seed.
Every run takes about `steps` Adam steps (~2,200, as e1_2 does): the epochs scale with
1 / train_fraction, so that fewer images do not also mean less optimisation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from handlers.common import describe, save_artifacts, train_and_evaluate

if TYPE_CHECKING:
    from labrunner import ExperimentRunner


def run(runner: ExperimentRunner) -> dict:
    fraction = float(runner.params["train_fraction"])
    result = train_and_evaluate(runner)
    model = describe(runner.params)
    return {
        "finding": (
            f"Trained on {fraction:.0%} of the training split ({result.n_train} images), the {model} "
            f"reaches {result.accuracy:.1%} test accuracy (test loss {result.test_loss:.3f}, ECE {result.ece:.3f})."
        ),
        "metrics": {**result.metrics(), "train_fraction": fraction},
        "artifacts": save_artifacts(
            runner, {f"{fraction:.0%} of the data": result}, f"{runner.sub_id}: {model}, seed {runner.seed}"
        ),
    }
