"""Plain-text tables of recall results (mode x write/read/plain/unrelated per split)."""

from __future__ import annotations

COLUMNS = ("write", "read", "plain", "unrelated", "unrelated_changed", "retrieval")
SHORT = {"unrelated_changed": "unrel_chg", "retrieval": "retr"}


def recall_header(doc: dict) -> str:
    """The line above a run's tables: model, task, seed, alpha, refinement steps, wall time."""
    f = doc["fitted"]
    return (
        f"model {doc['model']} | task {doc['task']} | seed {doc['config']['seed']} | "
        f"alpha {f['alpha']:.3g} (rho {f['rho']}) | refine steps {f.get('refine_steps', 1)} | "
        f"{doc['header']['wall_seconds']} s"
    )


def recall_report(doc: dict) -> str:
    """:func:`recall_header` and :func:`recall_table`: what ``fmi recall`` prints for one run."""
    return recall_header(doc) + "\n" + recall_table(doc).rstrip("\n")


def recall_table(doc: dict) -> str:
    """One block per split, one row per mode, each rate with its 95% interval where the run
    has one (``ci95``); ``-`` where a figure does not apply.

    >>> row = {"write": 1.0, "read": 0.5, "plain": 0.0, "unrelated": 0.0,
    ...        "unrelated_changed": 0.0, "retrieval": 0.5, "n": 2,
    ...        "ci95": {"read": [0.09, 0.91]}}
    >>> recall_table({"results": {"dual_key": {"same": row}}}).splitlines()[2].split()
    ['dual_key', '1.000', '0.500', '[0.09,0.91]', '0.000', '0.000', '0.000', '0.500', '2']
    """
    modes = list(doc["results"])
    splits = list(doc["results"][modes[0]])
    lines = []
    width = max(18, *(len(m) + 1 for m in modes))
    head = f"{'mode':<{width}}" + "".join(f"{SHORT.get(c, c):>18}" for c in COLUMNS) + f"{'n':>6}"
    for split in splits:
        lines += [f"[{split}]", head]
        for mode in modes:
            row = doc["results"][mode][split]
            cells = "".join(f"{_cell(row, c):>18}" for c in COLUMNS)
            lines.append(f"{mode:<{width}}{cells}{row['n']:>6}")
        lines.append("")
    return "\n".join(lines)


def _cell(row: dict, column: str) -> str:
    value = row.get(column)
    if not isinstance(value, float):
        return "-"
    ci = row.get("ci95", {}).get(column)
    return f"{value:.3f}" + (f" [{ci[0]:.2f},{ci[1]:.2f}]" if ci else "")
