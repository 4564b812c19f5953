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
#
# The four rules run in Snakemake's own process (`run:`, with the profile's force-use-threads;
# without it Snakemake would start a whole Snakemake per job): one Python start and one import of
# labrunner, matplotlib and the plan per invocation instead of one per job, which is what a plan
# edit that rebuilds every aggregate costs (see labrunner.steps and docs/performance.md). No
# `conda:` here, as Snakemake allows none with `run:`: the steps run with the labrunner that runs
# the workflow itself. `threads: 0`: the steps take no core from --cores (they wait for one
# another in labrunner.steps), so Snakemake starts every ready aggregate in one round of its
# scheduler rather than two a round, each round stat-ing every input of every ready job.
FINDINGS_DIR = PIPELINE.findings_dir
# `snakemake --report report.html research/FINDINGS.md` embeds the outputs flagged with report():
# captions in ../report/, one category per kind of output, one subcategory per experiment.
REPORT_CAPTIONS = "../report"


rule aggregate_experiment:
    input:
        records=get_experiment_records,
        plan=PIPELINE.plan_file,
    output:
        # update(): Snakemake keeps the previous file for the job, which reuses its generated_at when
        # nothing it says has changed (a plan comment), so FINDINGS and their HTML stay as they were
        results=update(f"{RESULTS}/{{exp}}/results.yaml"),
        table_md=f"{RESULTS}/{{exp}}/metrics.md",
        table_csv=report(
            f"{RESULTS}/{{exp}}/metrics.csv",
            caption=f"{REPORT_CAPTIONS}/metrics.rst",
            category="Metric tables",
            subcategory="{exp}",
        ),
        plot=report(
            f"{RESULTS}/{{exp}}/criteria.png",
            caption=f"{REPORT_CAPTIONS}/criteria.rst",
            category="Criteria and comparisons",
            subcategory="{exp}",
        ),
        # one plot per swept sub (<sub>.png), none when the experiment has no grid
        sweeps=report(
            directory(f"{RESULTS}/{{exp}}/sweeps"),
            patterns=["{sweep}.png"],
            caption=f"{REPORT_CAPTIONS}/sweeps.rst",
            category="Sweeps",
            subcategory="{exp}",
        ),
        # one plot of learning curves per sub that logged metrics with steps (<sub>.png)
        curves=report(
            directory(f"{RESULTS}/{{exp}}/curves"),
            patterns=["{sub}.png"],
            caption=f"{REPORT_CAPTIONS}/curves.rst",
            category="Learning curves",
            subcategory="{exp}",
        ),
        # the handlers' artifacts a report page can show, linked from the run folders
        artifacts=report(
            directory(f"{RESULTS}/{{exp}}/report"),
            patterns=["{run}__{file}"],  # flat: <sub>__[seed-<n>__]<name> (see labrunner.report)
            caption=f"{REPORT_CAPTIONS}/artifacts.rst",
            category="Artifacts",
            subcategory="{exp}",
            labels={"run": "{run}", "file": "{file}"},
        ),
    params:
        stub=is_stub,
        ignore_gates=ignores_gates,
    log:
        f"{RESULTS}/{{exp}}/aggregate.log",
    localrule: True
    threads: 0  # see above
    run:
        from labrunner import steps  # here, not at parse time: a dry run needs none of it

        steps.aggregate_experiment_job(input, output, params, wildcards, log)


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
    threads: 0  # see above
    run:
        from labrunner import steps  # here, not at parse time: a dry run needs none of it

        steps.gates_job(input, output, params, wildcards, log)


rule experiment_findings:
    input:
        results=get_experiment_results,
    output:
        # update(): the file holds the researcher's text; Snakemake must not delete it first
        update(f"{FINDINGS_DIR}/experiments/{{exp}}/FINDINGS.md"),
        # the same as one self-contained HTML page, for the report; update(): drawn again only when
        # the FINDINGS text it was made from changed (labrunner.report.write_findings_html)
        html=report(
            update(f"{RESULTS}/{{exp}}/findings.html"),
            caption=f"{REPORT_CAPTIONS}/findings.rst",
            category="Findings",
            subcategory="{exp}",
        ),
    log:
        f"{RESULTS}/{{exp}}/findings.log",
    localrule: True
    threads: 0  # see above
    run:
        from labrunner import steps  # here, not at parse time: a dry run needs none of it

        steps.experiment_findings_job(input, output, params, wildcards, log)


rule project_findings:
    input:
        results=get_all_experiment_results,
        findings=get_all_experiment_findings,
        gates=PIPELINE.gates_file,
        plan=PIPELINE.plan_file,
    output:
        update(PIPELINE.project_findings),
        html=report(
            update(PIPELINE.project_findings_html),
            caption=f"{REPORT_CAPTIONS}/project.rst",
            category="Findings",
            subcategory="project",
        ),
    params:
        stub=is_stub,
    log:
        f"{RESULTS}/findings.log",
    localrule: True
    threads: 0  # see above
    run:
        from labrunner import steps  # here, not at parse time: a dry run needs none of it

        steps.project_findings_job(input, output, params, wildcards, log)
