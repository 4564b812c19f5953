# labrunner: the research plan as a pipeline of file targets. Table of contents only; the rules
# live in rules/, the logic in src/labrunner/. `snakemake -n` shows what would run and why.
from snakemake.utils import min_version

min_version("9.0")


include: "rules/common.smk"
include: "rules/run.smk"
include: "rules/aggregate.smk"


rule all:
    input:
        get_final_targets,
    default_target: True
