"""Print the README block for a results file: what tests/test_results_files.py compares.

    .venv/bin/python scripts/readme_table.py results/gemma-3-270m/recall-seeds.json
"""

import json
import sys

from fmi.seeds import seeds_report
from fmi.table import recall_report


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: readme_table.py RESULTS.json", file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    print(seeds_report(doc) if "per_seed" in doc else recall_report(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
