# labrunner: the research plan (research/research_plan.yaml) as a pipeline of file targets.
# The workflow ships inside the installed labrunner package and is pulled in here, so an upgrade
# never leaves stale copies of the rules behind. Written by `labrunner init`.
from labrunner.workflow import snakefile


include: snakefile()


# the default target: the project FINDINGS.md and everything it needs (add your own targets here).
# Do not define onstart/onsuccess/onerror here: Snakemake keeps one of each, and labrunner's (in
# the workflow) record the run, bring the write-up up to date and print the summary.
rule all:
    input:
        get_final_targets,
    default_target: True
