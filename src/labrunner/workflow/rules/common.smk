# Plan loading (validated once, before any job starts) and every input function the rules use.
from labrunner.errors import LabrunnerError
from labrunner.pipeline import Pipeline, put_labrunner_on_path
from labrunner.summary import print_run_summary

try:
    PIPELINE = Pipeline.from_config(config, check_handlers=workflow.is_main_process)
    if workflow.is_main_process:
        # records live beside the results: a job's files must reach this side
        PIPELINE.require_shared_results(u.item_to_choice() for u in workflow.storage_settings.shared_fs_usage)
except LabrunnerError as error:
    raise WorkflowError(f"labrunner: {error}") from None

RESULTS = PIPELINE.results_root
# Once, on the submitting side; never again in the jobs, where two of them would race on a file.
if workflow.is_main_process:
    # a result file truncated or edited on disk is moved to its history/ and rebuilt
    PIPELINE.set_aside_damaged_results()
    # a result deleted by Snakemake after its job wrote it gets a failure record that says so
    PIPELINE.record_discarded_results()
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


def get_runtime_min(wildcards):
    return PIPELINE.runtime_min(wildcards.exp, wildcards.run)


def get_mem_mb(wildcards):
    return PIPELINE.mem_mb(wildcards.exp, wildcards.run)


# The time and memory each job asks a cluster for (SLURM: --time, --mem): timeout_min of every
# attempt plus a margin, and the plan's mem_mb (when it sets none, Snakemake's default applies).
JOB_LIMITS = {"runtime": get_runtime_min} | ({"mem_mb": get_mem_mb} if PIPELINE.sets_memory else {})


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


onsuccess:
    print_run_summary(PIPELINE.plan, stub=PIPELINE.stub, success=True)


onerror:
    PIPELINE.record_discarded_results()
    print_run_summary(PIPELINE.plan, stub=PIPELINE.stub, success=False)
