"""One-line fixes for the failures researchers meet most often.

Each rule matches the error type and message (and, failing that, the traceback text); the first
match wins, so specific rules come before general ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["HINTS", "Hint", "hint_for"]


@dataclass(frozen=True)
class Hint:
    error_types: tuple[str, ...]  # empty: any type
    pattern: str  # regex searched in "Type: message", then in the traceback
    text: str

    def matches(self, error_type: str, message: str, traceback_text: str) -> re.Match[str] | None:
        if self.error_types and error_type not in self.error_types:
            return None
        regex = re.compile(self.pattern, re.IGNORECASE)
        return regex.search(f"{error_type}: {message}") or regex.search(traceback_text)


HINTS: tuple[Hint, ...] = (
    Hint((), r"No space left on device|Errno 28\]|Disk quota exceeded",
         "the disk is full: free space (`df -h` shows how much is left, the record's warnings say where), "
         "or write large files (checkpoints, data) to a bigger disk; then run again"),
    Hint((), r"Can't call numpy\(\) on Tensor that requires grad",
         "call .detach() before .numpy() (or pass the tensor itself to runner.log_metrics / return it: labrunner converts it)"),
    Hint((), r"can't convert (cuda|mps)(:\d+)? device type tensor to numpy",
         "move the tensor to the CPU first: tensor.detach().cpu().numpy() (returned and logged tensors are converted for you)"),
    Hint((), r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory",
         "the GPU ran out of memory: lower the batch size or model size in params, free tensors you keep, or ask for a larger GPU (gpu: A100-80GB)"),
    Hint((), r"is not JSON serializable",
         "return plain values: labrunner converts tensors and numpy for you; convert other objects with float()/str(), or save them with runner.results.save_json_artifact"),
    Hint(("KeyError",), r".",
         "the key is not in that mapping: print its keys (e.g. print(outputs.keys())) just before the failing line to see what the model returned"),
    Hint((), r"mat1 and mat2 shapes cannot be multiplied|size mismatch|shapes? .* (not aligned|mismatch)|must match the size of tensor|Expected input batch_size|cannot reshape array|operands could not be broadcast",
         "a shape mismatch: print(x.shape) for the inputs of the failing line and check the layer sizes against the data (in_features, hidden, number of classes)"),
    Hint(("ModuleNotFoundError", "ImportError"), r"No module named '?(handlers|common)",
         "a project module was not found: put shared code under handlers/ and import it as `from handlers.<module> import ...`"),
    Hint(("ModuleNotFoundError", "ImportError"), r"No module named",
         "install the missing package (and add it to pyproject.toml so the Modal image and CI get it too): pip install <package>"),
    Hint((), r"api_key not configured|No API key configured|wandb login|WANDB_API_KEY|401.*wandb|wandb.*(401|unauthorized)",
         "W&B is not logged in: run `wandb login`, set WANDB_API_KEY, or set `wandb: {mode: offline}` in the plan"),
    Hint((), r"Token missing|modal token new|AuthError|Could not authenticate client|modal.exception.AuthError",
         "Modal is not logged in here: run `modal token new` (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET)"),
    Hint(("NotFoundError",), r"Modal secret",
         "create the secret on Modal: `modal secret create <name> WANDB_API_KEY=...` (`modal secret list` shows yours), or name one you have in the plan's defaults.modal_secret"),
    Hint(("InvalidError",), r"GPU type",
         "use a GPU type Modal offers in the plan's `gpu:` (T4, L4, A10G, L40S, A100, A100-80GB, H100, H200, B200), or `gpu: null` for none"),
    Hint(("Preempted",), r".",
         "nothing to fix in the code: Modal lost or preempted the machine; run the same command again (`retries: N` in the plan retries within the job)"),
    Hint((), r"^\w+: could not reach Modal in \d+ tries",
         "the Modal servers could not be reached from here: check the network (and status.modal.com), then run the same command again"),
    Hint(("Timeout",), r".",
         "the handler ran past timeout_min: raise timeout_min for this sub in the plan, or make it faster (check the stack above for where it was)"),
    Hint(("MemoryError",), r".",
         "the handler ran out of memory: lower the batch size or the data kept in memory, free what you no longer need, or run on a machine with more RAM"),
    Hint(("Killed",), r".",
         "killed by SIGKILL, most often the out-of-memory killer: lower memory use (batch size, data kept in memory); `dmesg | tail` shows OOM kills"),
    Hint(("Crash",), r".",
         "the process crashed in native code: the stack above shows the Python line that called it; check library versions (torch, numpy) and inputs"),
    Hint(("Interrupted", "Terminated"), r".",
         "the run was stopped from outside; run the same command again to finish it"),
    Hint(("SystemExit",), r".",
         "return a dict instead of exiting; if a library called it (argparse reading sys.argv, a CLI helper), "
         "pass settings through the plan's params instead"),
    Hint(("HandlerReturnError",), r".",
         "return a dict like {'finding': '...', 'metrics': {'name': number}, 'artifacts': [paths from runner.results]}"),
    Hint(("ArtifactError",), r"could not write",
         "the artifacts folder is not writable: check the disk space and permissions of the results folder"),
    Hint(("ArtifactError",), r".",
         "name artifacts with a relative path inside the artifacts folder, e.g. 'plots/curve.png'"),
    Hint(("MetricError",), r".",
         "log one number per metric: reduce tensors first (loss.mean()), or save arrays with runner.results.save_json_artifact"),
    Hint(("NotImplementedError",), r"write the experiment in",
         "this handler is still the template that `labrunner new` wrote: write the experiment in it (it must return "
         "{'finding': ..., 'metrics': {...}}), then run the same command again"),
    Hint(("ZeroDivisionError",), r".", "a denominator was zero: check for empty data (a stub run with too little data?)"),
    Hint(("FileNotFoundError",), r".",
         "a file was not found: paths are relative to the project root; put data under the project or use an absolute path"),
)


def hint_for(error_type: str, message: str, traceback_text: str = "") -> str | None:
    for hint in HINTS:
        if hint.matches(error_type, message, traceback_text):
            return hint.text
    return None
