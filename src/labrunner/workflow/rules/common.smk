# Plan loading (validated once, before any job starts) and every input function the rules use.
import gc
import os
import sys

# The plan, its validated model and the facts about every handler live as long as Snakemake does.
# Left to the cyclic garbage collector they are scanned again at every collection while the DAG is
# built (a quarter of `snakemake -n` on 1,000 subs): collection waits until they are loaded, and
# then they are moved out of its sight (gc.freeze) at the end of this file.
gc.disable()

from labrunner import invocation
from labrunner.errors import LabrunnerError
from labrunner.pipeline import Pipeline, cancel_scheduler_timers, put_labrunner_on_path, forced_run
from labrunner.summary import end_of_run

try:
    PIPELINE = Pipeline.from_config(
        config, forced=forced_run(workflow.dag_settings), main_process=workflow.is_main_process
    )
    if workflow.is_main_process:
        # records live beside the results: a job's files must reach this side
        PIPELINE.require_shared_results(u.item_to_choice() for u in workflow.storage_settings.shared_fs_usage)
        # a run the plan does not have, typed as a target, is named here: its rule may have no
        # input function to say so (see SUB_INPUTS). Snakemake tells the workflow its targets
        # only after reading it, so the command line is read: a word that is a result path.
        PIPELINE.check_targets(sys.argv[1:])
except LabrunnerError as error:
    raise WorkflowError(f"labrunner: {error}") from None

RESULTS = PIPELINE.results_root
# Parse-time work runs once, on the submitting side, never again inside a remote job: a result
# file truncated or edited on disk is moved to its history/ and rebuilt; a run whose records are
# gone is marked so that it is rebuilt; experiments held by a dependency or a gate are named.
if workflow.is_main_process:
    PIPELINE.plan_digest()
    PIPELINE.set_aside_damaged_results()
    PIPELINE.mark_unrecorded_runs()
    PIPELINE.announce_holds()
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
    # the handler file and the project modules it imports (an edit reruns the sub), and, for a
    # run that waits for a dependency or a gate that may still change in this run, what it waits for
    return PIPELINE.handler_inputs(wildcards.exp, wildcards.run) + PIPELINE.requirement_inputs(
        wildcards.exp, wildcards.run
    )


# A pattern where it names every run's inputs (each handler at its default place, importing no
# project module): a function is called on every job of the DAG at every invocation.
SUB_INPUTS = PIPELINE.handler_input_pattern or get_sub_inputs


def get_run_spec(wildcards):
    return PIPELINE.run_spec(wildcards.exp, wildcards.run)


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
# A value rather than a function when every job asks for the same.
JOB_LIMITS = {"runtime": PIPELINE.uniform(PIPELINE.runtime_min) or get_runtime_min} | (
    {"mem_mb": PIPELINE.uniform(PIPELINE.mem_mb) or get_mem_mb} if PIPELINE.sets_memory else {}
)


def get_experiment_records(wildcards):
    # an experiment that requires gates asks the gates checkpoint first: its runs join the DAG
    # only once the gates are up to date, and only if they passed (see Pipeline.experiment_records)
    if PIPELINE.waits_for_gates(wildcards.exp):
        gates_file = checkpoints.gates.get().output[0]
        return PIPELINE.experiment_records(wildcards.exp, gates_file)
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


def ignores_gates(wildcards=None):
    return PIPELINE.ignore_gates


onstart:
    if INVOCATION is not None:
        INVOCATION.save(PIPELINE.plan.root, PIPELINE.stub, workflow.dag_settings.targets)
    if not workflow.use_threads:  # known only now: Snakemake sets its execution settings after reading this file
        print(SLOW_AGGREGATES, file=sys.stderr)


# A profile written before the aggregates ran in Snakemake's process (see rules/aggregate.smk)
SLOW_AGGREGATES = (
    "labrunner: this run's profile lacks `force-use-threads: true`, so Snakemake starts a new Snakemake "
    "for every aggregate step (seconds each); add that line to profiles/default/config.yaml "
    "(`labrunner init` writes it)"
)


# The end of every run, whatever happened: the write-up is brought up to date with the records
# (an aggregate that Snakemake skipped after a failure would otherwise go on describing an earlier
# state), then the summary. A run whose jobs all succeeded still fails if its results are not
# current (the plan or a handler was edited while it ran), so that an exit status of 0 always
# means `snakemake -n` has nothing left to do.
# Either way the scheduler is done by then: its leftover wake-up timers are cancelled, or Python
# would wait up to a second for them before exiting (see cancel_scheduler_timers).
# What the run parsed is kept for the next one (PIPELINE.save_parsed_yaml).
onsuccess:
    cancel_scheduler_timers()
    problem = end_of_run(PIPELINE, success=True)
    PIPELINE.save_parsed_yaml()
    if problem:
        raise WorkflowError(problem)


onerror:
    cancel_scheduler_timers()
    # a result Snakemake deleted after its job wrote it (a cluster job cancelled as it finished)
    # is recorded now, so that the summary and the write-up say so
    PIPELINE.mark_unrecorded_runs()
    end_of_run(PIPELINE, success=False)
    PIPELINE.save_parsed_yaml()


if workflow.is_main_process:
    PIPELINE.save_source_facts()
# everything loaded so far lives until Snakemake exits: the collector need not scan it again
gc.freeze()
gc.enable()
