"""Budget: `snakemake -n` on 1,000 subs within 1.3x of a plain Snakefile with 1,000 trivial jobs.

Both are measured in this run, on this machine, alternately (median of 7 each), on a fresh tree
(no results yet: the case of CI); prints the two times and the ratio, and exits non-zero when
the ratio is over budget. Usage: python benchmarks/dry_run.py [N_SUBS]
"""

from __future__ import annotations

import shutil
import sys

from common import make_plain, make_project, snakemake_cmd, timed_pair

BUDGET_RATIO = 1.3
HANDLER = 'def HANDLER(runner):\n    return {"finding": "nothing to see", "metrics": {"x": 1.0}}\n'


def main() -> int:
    n_subs = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    project = make_project(n_experiments=10, subs_per_experiment=n_subs // 10, handler_body=HANDLER)
    plain = make_plain(n_subs)
    try:
        command = snakemake_cmd() + ["-n", "--quiet", "all"]
        baseline_s, labrunner_s = timed_pair((command, plain), (command, project))
    finally:
        shutil.rmtree(project, ignore_errors=True)
        shutil.rmtree(plain, ignore_errors=True)
    ratio = labrunner_s / baseline_s
    verdict = "within" if ratio <= BUDGET_RATIO else "OVER"
    print(f"snakemake -n, {n_subs} subs: labrunner {labrunner_s:.2f}s, plain Snakefile {baseline_s:.2f}s, "
          f"ratio {ratio:.2f} ({verdict} the {BUDGET_RATIO}x budget)")
    return 0 if ratio <= BUDGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
