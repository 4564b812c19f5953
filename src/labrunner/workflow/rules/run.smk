# One job per sub-experiment (and seed): results/<exp>/<sub>[/seed-<n>]/result.yaml.
# The job writes the sub's failure.yaml itself: `status: running` when an attempt starts, the
# failure when it fails, and its result only when it succeeds (see rules/aggregate.smk for why
# the aggregates take the failure records as inputs).


rule run_sub:
    input:
        SUB_INPUTS,
    output:
        f"{RESULTS}/{{exp}}/{{run}}/result.yaml",
    params:
        # what the result depends on besides code: params, seed, handler; a change reruns the sub.
        # The job runs with exactly this spec, not with the plan file, which may change meanwhile.
        spec=get_run_spec,
    log:
        # written by labrunner itself while the handler runs, and echoed to the console
        f"{RESULTS}/{{exp}}/{{run}}/run.log",
    resources:
        **GPU_RESOURCES,
        **JOB_LIMITS,
    conda:
        "../envs/labrunner.yaml"
    shell:
        # the options shared by every job (plan, results tree, stub, gates) are part of the
        # command, not of params: changing them must not rerun subs whose results still hold
        f"labrunner run {{wildcards.exp}} {{wildcards.run}} --spec {{params.spec:q}} {PIPELINE.run_options}"
