"""Rule gates: results/gates.yaml from the results of the experiments that gates name."""
from labrunner import steps

with steps.logged(snakemake.log[0]):
    steps.gates(snakemake.input.plan, snakemake.params.stub, snakemake.input.results, snakemake.output[0])
