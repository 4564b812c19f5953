"""Rule experiment_findings: research/experiments/<exp>/FINDINGS.md, generated blocks only."""
from labrunner import steps

with steps.logged(snakemake.log[0]):
    steps.experiment_findings(snakemake.input.results, snakemake.output[0])
