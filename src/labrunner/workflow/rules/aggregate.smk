# Aggregates: per experiment results.yaml, metric tables and plot; gates; FINDINGS.md files.
#
# Why the failure records are inputs: Snakemake does not rebuild a missing intermediate file
# while the files downstream of it exist and are newer. A failed sub leaves no result.yaml, but
# it rewrites its failure.yaml, which is newer than the old results.yaml: so the next run
# rebuilds the aggregate, and with it reruns exactly the failed subs, even after a transient
# failure with nothing changed. The plan is an input too, so edited criteria rebuild the
# verdicts without rerunning any sub.
#
# When a sub fails, Snakemake skips the aggregates that need it; the end-of-run hook (see
# rules/common.smk and labrunner.writeup) then rewrites every aggregate output from the records,
# keeping each file's modification time, so that the write-up describes the present while
# Snakemake's view of what is out of date (and so the next run) stays exactly as above.
FINDINGS_DIR = PIPELINE.findings_dir


rule aggregate_experiment:
    input:
        records=get_experiment_records,
        plan=PIPELINE.plan_file,
    output:
        results=f"{RESULTS}/{{exp}}/results.yaml",
        table_md=f"{RESULTS}/{{exp}}/metrics.md",
        table_csv=f"{RESULTS}/{{exp}}/metrics.csv",
        plot=f"{RESULTS}/{{exp}}/criteria.png",
        # one plot per swept sub (<sub>.png), none when the experiment has no grid
        sweeps=directory(f"{RESULTS}/{{exp}}/sweeps"),
    params:
        stub=is_stub,
        ignore_gates=ignores_gates,
    log:
        f"{RESULTS}/{{exp}}/aggregate.log",
    localrule: True
    conda:
        "../envs/labrunner.yaml"
    script:
        "../scripts/aggregate_experiment.py"


# A checkpoint: an experiment that `requires:` a gate decides which of its runs to build only
# after the gate is up to date (see get_experiment_records), so that a gate that passes during a
# run lets the held experiment run in the same run, and one that fails holds it with no job failed.
checkpoint gates:
    input:
        results=get_gated_experiment_results,
        plan=PIPELINE.plan_file,
    output:
        PIPELINE.gates_file,
    params:
        stub=is_stub,
    log:
        f"{RESULTS}/gates.log",
    localrule: True
    conda:
        "../envs/labrunner.yaml"
    script:
        "../scripts/gates.py"


rule experiment_findings:
    input:
        results=get_experiment_results,
    output:
        # update(): the file holds the researcher's text; Snakemake must not delete it first
        update(f"{FINDINGS_DIR}/experiments/{{exp}}/FINDINGS.md"),
    log:
        f"{RESULTS}/{{exp}}/findings.log",
    localrule: True
    conda:
        "../envs/labrunner.yaml"
    script:
        "../scripts/experiment_findings.py"


rule project_findings:
    input:
        results=get_all_experiment_results,
        findings=get_all_experiment_findings,
        gates=PIPELINE.gates_file,
        plan=PIPELINE.plan_file,
    output:
        update(PIPELINE.project_findings),
    params:
        stub=is_stub,
    log:
        f"{RESULTS}/findings.log",
    localrule: True
    conda:
        "../envs/labrunner.yaml"
    script:
        "../scripts/project_findings.py"
