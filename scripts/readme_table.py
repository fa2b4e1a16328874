"""Print the README block for a results file: what tests/integration/test_results_files.py compares.

.venv/bin/python scripts/readme_table.py results/gemma-3-270m/recall-seeds.json
"""

import json
import sys

from analyses.results import results_report


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: readme_table.py RESULTS.json", file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    print(results_report(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
