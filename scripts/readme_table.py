"""Print the README or docs block for a results file: what tests/integration/test_results_files.py
compares with the block under ``<!-- results: PATH -->`` (or ``<!-- results: PATH headline -->``).

.venv/bin/python scripts/readme_table.py results/gemma-3-270m/recall-seeds.json
.venv/bin/python scripts/readme_table.py --headline results/gemma-3-270m/recall-seeds.json
"""

import json
import sys

from analyses.results import VIEWS


def main() -> int:
    args = sys.argv[1:]
    view = ""
    if args and args[0] == "--headline":
        view, args = "headline", args[1:]
    if len(args) != 1:
        print("usage: readme_table.py [--headline] RESULTS.json", file=sys.stderr)
        return 2
    with open(args[0]) as f:
        doc = json.load(f)
    print(VIEWS[view](doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
