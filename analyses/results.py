"""The text a committed results document renders to in the README and the docs, whichever
command wrote it (``scripts/readme_table.py`` prints it)."""

from __future__ import annotations

from fmi.experiments.table import recall_report


def results_report(doc: dict) -> str:
    """The text a committed results document renders to in the README and the docs: a recall run, a
    several-seed recall run (:func:`fmi.experiments.seeds.seeds_report`), a comparison's report
    document
    (``compare.json``: one Markdown table per split) or a several-seed comparison
    (:func:`analyses.compare.seeds.seeds_report`), an editing benchmark (``fmi edit --json``)
    or a sweep (``fmi sweep``'s ``sweep.json``: :func:`analyses.sweep.table.sweep_tables`)."""
    if doc.get("header", {}).get("command") == "sweep":
        from analyses.sweep.table import sweep_tables

        return sweep_tables(doc)
    if "results" in doc and "literature" in doc:
        from analyses.edit.figures import markdown_table as edit_table

        return edit_table(doc)
    splits = doc.get("data", doc).get("splits")  # compare.json, or what compare --json writes
    if isinstance(splits, dict):
        from analyses.compare.figures import markdown_table

        seed = doc["header"]["config"]["seed"]
        return "\n\n".join(
            f"seed {seed}, split {name}:\n\n{markdown_table(result['rows'])}"
            for name, result in splits.items()
        )
    if "per_seed" not in doc:
        return recall_report(doc)
    if "splits" in next(iter(doc["per_seed"].values())):
        from analyses.compare.seeds import seeds_report as compare_seeds_report

        return compare_seeds_report(doc)
    from fmi.experiments.seeds import seeds_report

    return seeds_report(doc)


# the README's headline: read in these modes, and the false activations of the recall default
HEADLINE_READ = ("none", "both_top1", "context_gate (oracle)", "dual_key")
HEADLINE_DEFAULT = "dual_key"


def _cell(summary: dict) -> str:
    """A mean over seeds and its range, as ``fmi.experiments.seeds.seeds_table`` writes it."""
    return f"{summary['mean']:.3f} ({summary['min']:.3f}–{summary['max']:.3f})"


def headline_table(doc: dict) -> str:
    """A several-seed recall document (``fmi recall --seeds``) as one Markdown table: a row per
    split, the read rate of each mode in ``HEADLINE_READ``, then the plain and
    unrelated_changed rates of ``HEADLINE_DEFAULT``; each cell the mean over seeds and the
    lowest–highest seed, the figures of the document's full several-seed table.

    >>> s = {"mean": 0.5, "min": 0.25, "max": 0.75}
    >>> doc = {"summary": {m: {"same": {"read": s, "plain": s, "unrelated_changed": s}}
    ...                    for m in HEADLINE_READ}}
    >>> print(headline_table(doc).splitlines()[2])
    | same | 0.500 (0.250–0.750) | 0.500 (0.250–0.750) | 0.500 (0.250–0.750) | 0.500 (0.250–0.750) | 0.500 (0.250–0.750) | 0.500 (0.250–0.750) |
    """  # noqa: E501
    summary = doc["summary"]
    columns = [("read", m) for m in HEADLINE_READ]
    columns += [("plain", HEADLINE_DEFAULT), ("unrelated_changed", HEADLINE_DEFAULT)]
    lines = [
        "| split | " + " | ".join(f"{metric}: {mode}" for metric, mode in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for split in summary[HEADLINE_READ[0]]:
        cells = [_cell(summary[mode][split][metric]) for metric, mode in columns]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# what a ``<!-- results: PATH [view] -->`` marker renders its file with
VIEWS = {"": results_report, "headline": headline_table}
