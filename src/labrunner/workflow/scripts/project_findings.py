"""Rule project_findings: research/FINDINGS.md with the experiments and gates tables."""
from labrunner import steps

with steps.logged(snakemake.log[0]):
    steps.project_findings(snakemake.input.plan, snakemake.params.stub, snakemake.input.results,
                           snakemake.input.gates, snakemake.output[0], snakemake.output.html)
