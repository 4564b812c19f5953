"""Rule aggregate_experiment: results.yaml, metric tables, the criteria, sweep and learning-curve plots of one experiment."""
from labrunner import steps

with steps.logged(snakemake.log[0]):
    steps.aggregate_experiment(snakemake.input.plan, snakemake.wildcards.exp, snakemake.params.stub,
                               snakemake.output.results, snakemake.output.table_md, snakemake.output.table_csv,
                               snakemake.output.plot, ignore_gates=snakemake.params.ignore_gates,
                               sweeps=snakemake.output.sweeps, curves=snakemake.output.curves,
                               report=snakemake.output.artifacts)
