"""The text a committed results document renders to in the README and docs, whichever command
wrote it (``scripts/readme_table.py``)."""

from __future__ import annotations

from fmi.experiments.table import recall_report


def results_report(doc: dict) -> str:
    """The text a committed results document renders to in the README: a recall run, a
    several-seed recall run (:func:`fmi.experiments.seeds.seeds_report`), a comparison's report
    document
    (``compare.json``: one Markdown table per split) or a several-seed comparison
    (:func:`analyses.compare.seeds.seeds_report`) or an editing benchmark (``fmi edit --json``)."""
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
