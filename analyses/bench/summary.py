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
    for mode, by_size in doc["retrieval_ms_per_query"].items():
        for n, r in by_size.items():
            rescored = f", {r['rescored']:g} rescored" if "rescored" in r else ""
            lines.append(
                f"{mode}: retrieval per query at {int(n):,} entries: score matrix "
                f"{r['matrix']:.3f} ms, search {r['search']:.3f} ms "
                f"(same entry {r['same_entries']:.2f}{rescored})"
            )
    lines.append("peak memory: " + ", ".join(f"{k} {v:.0f}" for k, v in doc["peak_memory"].items()))
    return lines
