# Plan loading (validated once, before any job starts) and every input function the rules use.
import os
import sys

from labrunner import invocation
from labrunner.errors import LabrunnerError
from labrunner.pipeline import Pipeline, put_labrunner_on_path
from labrunner.summary import print_run_summary

try:
    PIPELINE = Pipeline.from_config(config)
except LabrunnerError as error:
    raise WorkflowError(f"labrunner: {error}") from None

RESULTS = PIPELINE.results_root
# a result file truncated or edited on disk is moved to its history/ and rebuilt
PIPELINE.set_aside_damaged_results()
# this run's command line, recorded when it starts (onstart), so that the rerun hint repeats it;
# read before put_labrunner_on_path changes PATH, to print the program as the user can type it
INVOCATION = invocation.capture(sys.argv, os.environ.get("PATH")) if workflow.is_main_process else None
# jobs call the `labrunner` of the environment Snakemake runs in, activated or not
put_labrunner_on_path()
PIPELINE.export_backend()


wildcard_constraints:
    exp=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    run=r"[A-Za-z0-9][A-Za-z0-9._-]*(/seed-[0-9]+)?",


def get_final_targets(wildcards):
    return [PIPELINE.project_findings]


def get_sub_inputs(wildcards):
    # the handler file and the project modules it imports (an edit reruns the sub), and the
    # results of the experiments this one depends on: ancient(), so that they are waited for
    # but a rebuild of them does not rerun this sub
    dependencies = [ancient(path) for path in PIPELINE.dependency_results(wildcards.exp)]
    return PIPELINE.handler_inputs(wildcards.exp, wildcards.run) + dependencies


def get_run_params(wildcards):
    return PIPELINE.run_params(wildcards.exp, wildcards.run)


def get_gpu_count(wildcards):
    return PIPELINE.gpu_count(wildcards.exp, wildcards.run)


def get_gpu_model(wildcards):
    return PIPELINE.gpu_model(wildcards.exp, wildcards.run)


def get_modal_gpu(wildcards):
    return PIPELINE.modal_gpu(wildcards.exp, wildcards.run)


# The GPU each job asks for: `gpu` (count, capped with `--resources gpu=N`) and `gpu_model` for
# local jobs, which executor plugins such as SLURM's turn into `--gpus=<model>:<n>`; `modal_gpu`
# for Modal jobs. Only when some sub asks for a GPU: per-job functions cost time on every job.
GPU_RESOURCES = (
    {"gpu": get_gpu_count, "gpu_model": get_gpu_model, "modal_gpu": get_modal_gpu}
    if PIPELINE.uses_gpus
    else {}
)


def get_experiment_records(wildcards):
    return PIPELINE.experiment_records(wildcards.exp)


def get_experiment_results(wildcards):
    return PIPELINE.experiment_results(wildcards.exp)


def get_all_experiment_results(wildcards):
    return PIPELINE.all_experiment_results()


def get_gated_experiment_results(wildcards):
    return PIPELINE.gated_experiment_results()


def get_all_experiment_findings(wildcards):
    return PIPELINE.all_experiment_findings()


def is_stub(wildcards=None):
    return PIPELINE.stub


onstart:
    if INVOCATION is not None:
        INVOCATION.save(PIPELINE.plan.root, PIPELINE.stub, workflow.dag_settings.targets)


onsuccess:
    print_run_summary(PIPELINE.plan, stub=PIPELINE.stub, success=True)


onerror:
    print_run_summary(PIPELINE.plan, stub=PIPELINE.stub, success=False)
