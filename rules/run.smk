# One job per sub-experiment (and seed): results/<exp>/<sub>[/seed-<n>]/result.yaml.


rule failure_record:
    # The sub's failure record starts as `status: none`. It is an input of the sub's job and of
    # the aggregates, and every failed attempt rewrites it: so the next run reruns exactly the
    # failed subs, even when an older results.yaml and FINDINGS.md exist.
    output:
        f"{RESULTS}/{{exp}}/{{run}}/failure.yaml",
    localrule: True
    run:
        write_none(output[0])


rule run_sub:
    input:
        handler=get_handler_inputs,
        failure=f"{RESULTS}/{{exp}}/{{run}}/failure.yaml",
        dependencies=get_dependency_results,
    output:
        f"{RESULTS}/{{exp}}/{{run}}/result.yaml",
    params:
        run=get_run_params,
        args=get_run_args,
        modal_gpu=get_modal_gpu,
    log:
        # written by labrunner itself, as the handler runs, and echoed to the console
        f"{RESULTS}/{{exp}}/{{run}}/run.log",
    resources:
        gpu=get_gpu_count,
    shell:
        "{LABRUNNER} run {params.args}"
