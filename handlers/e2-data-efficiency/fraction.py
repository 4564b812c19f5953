"""e2_*: the e1_2 MLP trained on a stratified `train_fraction` of the training split.

One handler for every fraction (the plan points each sub here with `handler:`). Each sub sets
`epochs` so that every run takes about the same number of Adam steps (~2,200, as in e1_2):
fewer images must not also mean less optimisation.
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
