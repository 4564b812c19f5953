# One job per sub-experiment (and seed): results/<exp>/<sub>[/seed-<n>]/result.yaml.
# The job writes the sub's failure.yaml itself: `status: running` when an attempt starts, the
# failure when it fails, and its result only when it succeeds (see rules/aggregate.smk for why
# the aggregates take the failure records as inputs).


rule run_sub:
    input:
        get_sub_inputs,
    output:
        f"{RESULTS}/{{exp}}/{{run}}/result.yaml",
    params:
        # what the result depends on besides code: params, seed, handler; a change reruns the sub
        run=get_run_params,
        options=PIPELINE.run_options,
    log:
        # written by labrunner itself while the handler runs, and echoed to the console
        f"{RESULTS}/{{exp}}/{{run}}/run.log",
    resources:
        **GPU_RESOURCES,
        **JOB_LIMITS,
    conda:
        "../envs/labrunner.yaml"
    shell:
        "labrunner run {wildcards.exp} {wildcards.run} {params.options}"
