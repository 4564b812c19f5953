"""`python -m labrunner`: the same as the `labrunner` command (the way Snakemake jobs call it)."""

import sys

from labrunner.cli import main

sys.exit(main())
