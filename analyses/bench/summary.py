"""The benchmark document as the plain lines ``fmi bench`` prints."""

from __future__ import annotations


def summary_lines(doc: dict) -> list[str]:
    """The benchmark as plain lines, the way ``fmi bench`` prints it."""
    w, g = doc["write"], doc["generation"]
    lines = [
        f"model {doc['model']} | {doc['threads']} threads | {g['prompts']} prompts",
        f"write / forward: {w['write_s']:.3f} s / {w['forward_s']:.3f} s = {w['ratio']:.3f}",
    ]
    for mode, r in g.items():
        if isinstance(r, dict):
            lines.append(
                f"{mode}: memory generation / plain generation: {r['seconds']:.3f} s / "
                f"{g['plain_s']:.3f} s = {r['ratio']:.3f}; {r['prompts_per_s']:.1f} prompts/s"
            )
    m = doc.get("multi_token", {})
    if "skipped" in m:
        lines.append(f"multi-token: skipped ({m['skipped']})")
    elif m:
        n = m["answer_tokens"]
        lines.append(
            f"{n}-token answers: write / forward: {m['write_s']:.3f} s / {m['forward_s']:.3f} s"
            f" = {m['write_ratio']:.3f}; memory generation / plain generation: "
            f"{m['memory_s']:.3f} s / {m['plain_s']:.3f} s = {m['generation_ratio']:.3f} "
            f"(dual_key, {n + 1} tokens; whole answer read {m['read_exact']:.2f})"
        )
    lines += _retrieval_lines(doc["retrieval_ms_per_query"], "")
    loaded = doc.get("loaded")
    if loaded:
        busy = loaded["busy_process"]
        lines.append(
            f"loaded (one core busy, pid {busy['pid']}, {busy['seconds']:.0f} s, "
            f"busy to the end: {busy['alive_at_end']}):"
        )
        lw, lg = loaded["write"], loaded["generation"]
        lines.append(f"  write / forward: {lw['ratio']:.3f}")
        for mode, r in lg.items():
            if isinstance(r, dict):
                lines.append(f"  {mode}: memory generation / plain generation: {r['ratio']:.3f}")
        lines += _retrieval_lines(loaded["retrieval_ms_per_query"], "  ")
    lines.append("peak memory: " + ", ".join(f"{k} {v:.0f}" for k, v in doc["peak_memory"].items()))
    return lines


def _retrieval_lines(by_bank: dict, indent: str) -> list[str]:
    lines = []
    for bank, by_mode in by_bank.items():
        for mode, by_size in by_mode.items():
            for n, r in by_size.items():
                rescored = f", {r['rescored']:g} rescored" if "rescored" in r else ""
                lines.append(
                    f"{indent}{bank} bank, {mode}: retrieval per query at {int(n):,} entries: "
                    f"matrix {r['matrix']:.3f} ms, search {r['search']:.3f} ms, read "
                    f"{r['read']:.3f} ms (took {r['read_way']}; same entries "
                    f"{r['same_entries']:.2f}{rescored}; {r['threads']} threads)"
                )
    return lines


def retrieval_table(doc: dict) -> str:
    """The retrieval figures, idle and with one core busy side by side, as the Markdown table
    ``docs/capacity.md`` quotes (a test checks the page against the committed JSON).

    >>> row = {"matrix": 5.0, "search": 1.0, "read": 1.1, "read_way": "search", "rescored": 3.0}
    >>> doc = {"retrieval_ms_per_query": {"written": {"dual_key": {"100000": row}}},
    ...        "loaded": {"retrieval_ms_per_query": {"written": {"dual_key": {"100000": row}}}}}
    >>> retrieval_table(doc).splitlines()[2].split(" | ")[:6]
    ['| written', 'dual_key', '100,000', '5.000', '1.000', '**1.100** (search)']
    """
    lines = [
        "| bank | mode | entries | idle: matrix | search | read | one core busy: matrix | search "
        "| read | rescored |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    loaded = doc.get("loaded", {}).get("retrieval_ms_per_query", {})
    for bank, by_mode in doc["retrieval_ms_per_query"].items():
        for mode, by_size in by_mode.items():
            for n, r in by_size.items():
                cells = [bank, mode, f"{int(n):,}", *_ms(r)]
                busy = loaded.get(bank, {}).get(mode, {}).get(n)
                cells += _ms(busy) if busy else ["-", "-", "-"]
                cells.append(f"{r.get('rescored', float('nan')):g}")
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ms(r: dict) -> list[str]:
    return [f"{r['matrix']:.3f}", f"{r['search']:.3f}", f"**{r['read']:.3f}** ({r['read_way']})"]
