# Plan loading (validated once, before any job starts) and every input function the rules use.
from labrunner.errors import LabrunnerError
from labrunner.workflow import Pipeline, labrunner_command
from labrunner.records import write_none
from labrunner.summary import print_run_summary

try:
    PIPELINE = Pipeline.from_config(config, workdir=Path(workflow.basedir))
except LabrunnerError as error:
    raise WorkflowError(f"labrunner: {error}") from None

RESULTS = PIPELINE.results_root
LABRUNNER = labrunner_command()


wildcard_constraints:
    exp=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    run=r"[A-Za-z0-9][A-Za-z0-9._-]*(/seed-[0-9]+)?",


def get_final_targets(wildcards):
    return [PIPELINE.project_findings]


def get_handler_inputs(wildcards):
    return PIPELINE.handler_inputs(wildcards.exp, wildcards.run)


def get_dependency_results(wildcards):
    # ancient(): wait for the experiments this one depends on, but never rerun because they
    # were rebuilt
    return [ancient(path) for path in PIPELINE.dependency_results(wildcards.exp)]


def get_run_params(wildcards):
    return PIPELINE.run_params(wildcards.exp, wildcards.run)


def get_run_args(wildcards):
    return PIPELINE.run_args(wildcards.exp, wildcards.run)


def get_gpu_count(wildcards):
    return PIPELINE.gpu_count(wildcards.exp, wildcards.run)


def get_modal_gpu(wildcards):
    return PIPELINE.modal_gpu(wildcards.exp, wildcards.run)


def get_experiment_records(wildcards):
    return PIPELINE.experiment_run_files(wildcards.exp)


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
    print_run_summary(PIPELINE.plan, stub=PIPELINE.stub, success=False)
