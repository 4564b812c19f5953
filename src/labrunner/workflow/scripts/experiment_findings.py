"""Rule experiment_findings: research/experiments/<exp>/FINDINGS.md, generated blocks only, and its HTML twin for the report."""
from labrunner import steps

with steps.logged(snakemake.log[0]):
    steps.experiment_findings(snakemake.input.results, snakemake.output[0], snakemake.output.html)
