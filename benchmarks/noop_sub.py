"""Budget: a no-op sub costs at most 0.35 s more than a bare `python -c pass` job.

Runs N no-op subs (W&B disabled, one core, no aggregates) through the real Snakefile, and N
`python -c pass` jobs through a plain Snakefile, in this run; prints the cost per job of each and
the difference. Usage: python benchmarks/noop_sub.py [N]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from common import make_project, snakemake_cmd, timed

BUDGET_EXTRA_S = 0.35
HANDLER = 'def HANDLER(runner):\n    return {"finding": "nothing to see", "metrics": {"x": 1.0}}\n'


def plain_project(n_jobs: int) -> Path:
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="labrunner-bench-plain-"))
    (root / "Snakefile").write_text(
        f"rule all:\n    input: expand('out/{{i}}.txt', i=range({n_jobs}))\n\n"
        f"rule job:\n    output: 'out/{{i}}.txt'\n    shell: '{sys.executable} -c pass && touch {{output}}'\n"
    )
    return root


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    project = make_project(n_experiments=1, subs_per_experiment=n, handler_body=HANDLER)
    plain = plain_project(n)
    targets = [f"results/exp-0/s{i}/result.yaml" for i in range(n)]
    try:
        # repeats=1 each: a second run would have nothing to do; clean between measurements
        plain_s = timed(snakemake_cmd() + ["--cores", "1", "--quiet", "all"], plain, repeats=1)
        labrunner_s = timed(snakemake_cmd() + [*targets, "--cores", "1", "--quiet", "all"], project, repeats=1)
    finally:
        shutil.rmtree(project, ignore_errors=True)
        shutil.rmtree(plain, ignore_errors=True)
    extra_s = (labrunner_s - plain_s) / n
    verdict = "within" if extra_s <= BUDGET_EXTRA_S else "OVER"
    print(f"{n} jobs, 1 core: labrunner no-op subs {labrunner_s:.2f}s, `python -c pass` jobs {plain_s:.2f}s; "
          f"extra per sub {extra_s:.3f}s ({verdict} the {BUDGET_EXTRA_S}s budget)")
    return 0 if extra_s <= BUDGET_EXTRA_S else 1


if __name__ == "__main__":
    sys.exit(main())
