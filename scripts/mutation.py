"""``make mutation``: mutate the functions that compute a metric, an interval, a fit rule, a
retrieval decision or a value, run the fast unit tests against each mutant (mutmut, configured
in pyproject.toml), and print the fraction killed with every survivor.

Scope. The functions in :data:`SCOPE` hold the arithmetic and the rules: what a hit is, how a
rate's interval is made, how thresholds, rho and the dual-key weights are chosen, how a query is
scored and decided, how a value and its refinement are computed. The wiring around them in the
same modules (``calibrate.fit`` and ``evaluate.prepare_split``, which batch forwards, train the
projector and hand results on) is left out: each of its mutants would need a fit on a model
(about a minute here), which puts a run far past 30 minutes on 2 cores. The recall and compare
tests on tiny models cover that wiring end to end.

Survivors judged equivalent (the mutant computes the same thing) are listed in
:data:`EQUIVALENT` with a reason each; the score is printed with and without them.

Usage: ``python scripts/mutation.py [--children N]`` (from the repository root; ``make
mutation``). Exit status 1 if the score, counting equivalent survivors as killed, is under 0.90.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

SCOPE = (
    "fmi.experiments.metrics.*",
    "fmi.experiments.intervals.*",
    "fmi.experiments.evaluate.x_hits__*",
    "fmi.experiments.evaluate.x_summarize__*",
    "fmi.experiments.evaluate.x_intervals__*",
    "fmi.experiments.evaluate.x_decode_steps__*",
    "fmi.memory.fit.x_threshold_between__*",
    "fmi.memory.fit.x_choose_rho__*",
    "fmi.memory.fit.x__smallest_near_best__*",
    "fmi.memory.fit.x__fit_dual_weights__*",
    "fmi.memory.fit.x__thresholds__*",
    "fmi.memory.fit.x__fit_standardizer__*",
    "fmi.memory.retrieve.x_choose__*",
    "fmi.memory.retrieve.x_decide__*",
    "fmi.memory.retrieve.x_read_decide__*",
    "fmi.memory.retrieve.x_top_k__*",
    "fmi.memory.retrieve.x_retrieved_right__*",
    "fmi.memory.retrieve.x_dual_features__*",
    "fmi.memory.retrieve.x_dual_key_scores__*",
    "fmi.memory.retrieve.x_mode_scores__*",
    "fmi.memory.retrieve.x_token_channels__*",
    "fmi.memory.values.*",
    "fmi.memory.refine.*",
)

_NAN = 'float("NAN") is float("nan"): the same value'
_NEG_INF = 'float("-INF") is float("-inf"): the same value'
_FLOAT_LABELS = "float 0/1 labels: LogisticRegression finds the same two classes and the same fit"
_BOOL = "torch infers bool from (nested) lists of bools"
_LONG = "torch infers int64 (torch.long) from Python ints"
_LONG_OR_EMPTY = (
    "int64 is inferred from Python ints; an empty list gives float32, but then there are no"
    " tail rows and refined_values returns before it indexes"
)
_FLOAT32 = "x is float32 (h.float()), torch.full's default"
_STRICT = "the lengths are checked (or cannot differ) before this zip, so strict changes nothing"
_NO_STRICT = "strict=False is zip's default"
EQUIVALENT: dict[str, str] = {
    "fmi.memory.refine.x_refine__mutmut_12": "one more step is computed but never stored or timed",
    "fmi.experiments.metrics.x_answer_prefix__mutmut_9": "strict=None is falsy, as the default False",
    "fmi.experiments.metrics.x_answer_prefix__mutmut_12": _NO_STRICT,
    "fmi.experiments.metrics.x_rate__mutmut_2": "np.mean([]) is nan too (with a warning)",
    "fmi.experiments.metrics.x_rate__mutmut_7": _NAN,
    "fmi.memory.fit.x__fit_dual_weights__mutmut_12": _FLOAT_LABELS,
    "fmi.memory.fit.x__fit_dual_weights__mutmut_14": _FLOAT_LABELS,
    "fmi.memory.fit.x__fit_dual_weights__mutmut_39": "numpy reads reshape(-2) as reshape(-1)",
    "fmi.memory.retrieve.x_top_k__mutmut_15": "topk's default dim is -1: dim 1 of the 2-D scores",
    "fmi.experiments.intervals.x_wilson__mutmut_5": _NAN,
    "fmi.experiments.intervals.x_wilson__mutmut_8": _NAN,
    "fmi.experiments.intervals.x_icc__mutmut_6": _STRICT,
    "fmi.experiments.intervals.x_icc__mutmut_9": _STRICT,
    "fmi.experiments.intervals.x_icc__mutmut_10": _STRICT,
    "fmi.experiments.intervals.x_icc__mutmut_66": (
        "denom > 0 whenever it is reached: n0 >= 1 for n > g, and msb = msw = 0 returns earlier"
    ),
    "fmi.experiments.intervals.x_icc__mutmut_68": "the denom <= 0 branch is unreachable (see x_icc__mutmut_66)",
    "fmi.experiments.intervals.x_icc__mutmut_69": "denom == 0 is unreachable (see x_icc__mutmut_66)",
    "fmi.experiments.intervals.x_icc__mutmut_75": (
        "(msb - msw) / (msb + (n0 - 1) msw) <= 1 for n0 >= 0: the clip at 1 never binds"
    ),
    "fmi.experiments.intervals.x_cluster_bootstrap__mutmut_4": _NAN,
    "fmi.experiments.intervals.x_cluster_bootstrap__mutmut_7": _NAN,
    "fmi.experiments.intervals.x_cluster_bootstrap__mutmut_39": (
        "rng.integers(n) draws from [0, n) with the same stream as rng.integers(0, n)"
    ),
    "fmi.experiments.intervals.x_cluster_interval__mutmut_4": _NAN,
    "fmi.experiments.intervals.x_cluster_interval__mutmut_7": _NAN,
    "fmi.memory.values.x_correction_values__mutmut_11": "softmax over dim +1 of 2-D logits is dim -1",
    "fmi.memory.retrieve.x_retrieved_right__mutmut_6": _BOOL,
    "fmi.memory.retrieve.x_retrieved_right__mutmut_8": _BOOL,
    "fmi.memory.refine.x_refine_written__mutmut_15": _LONG,
    "fmi.memory.refine.x_refine_written__mutmut_17": _LONG,
    "fmi.memory.retrieve.x_choose__mutmut_13": _NEG_INF,
    "fmi.memory.retrieve.x_read_decide__mutmut_31": _NEG_INF,
    "fmi.experiments.metrics.x_distribution__mutmut_6": "log_softmax over dim +1 of 2-D logits is dim -1",
    "fmi.experiments.metrics.x_distribution__mutmut_12": "the sum over dim +1 of [n, vocab] is over dim -1",
    "fmi.memory.retrieve.x_mode_scores__mutmut_29": _BOOL,
    "fmi.memory.retrieve.x_mode_scores__mutmut_31": _BOOL,
    "fmi.memory.values.x_streamed_values__mutmut_1": (
        "the block size: the same values up to float rounding (tested at other sizes)"
    ),
    "fmi.memory.values.x_streamed_values__mutmut_2": (
        "the row-block size: the same values up to float rounding (tested at other sizes)"
    ),
    "fmi.memory.values.x_streamed_values__mutmut_18": _FLOAT32,
    "fmi.memory.values.x_streamed_values__mutmut_22": _FLOAT32,
    "fmi.memory.values.x_streamed_values__mutmut_28": _NEG_INF,
    "fmi.memory.refine.x_refine_written__mutmut_39": _LONG_OR_EMPTY,
    "fmi.memory.refine.x_refine_written__mutmut_41": _LONG_OR_EMPTY,
    "fmi.memory.retrieve.x_choose__mutmut_22": _NEG_INF,
    "fmi.memory.retrieve.x_mode_scores__mutmut_43": _NEG_INF,
}

KILLED = {1, 3, 36, -24, 24, 152, 255, -11, -9}  # failed, pytest error, timeout, crash
TIMEOUT = {36, -24, 24, 152}  # over mutmut's CPU limit (30 x (the covering tests' time + 1 s))
SURVIVED, NO_TESTS = {0}, {5, 33}


def results(root: Path = Path("mutants")) -> dict[str, int | None]:
    """Every mutant in scope and its exit code (None: not run) from mutmut's ``.meta`` files."""
    out: dict[str, int | None] = {}
    for meta in sorted(root.glob("fmi/**/*.meta")):
        for key, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if any(fnmatch(key, p) for p in SCOPE):
                out[key] = code
    return out


def score(codes: dict[str, int | None], equivalent: dict[str, str] = EQUIVALENT) -> dict:
    """Killed / all in scope, and the survivors (never run, no test or survived).

    >>> score({"a": 1, "b": 0, "c": 33, "d": 36}, {"b": "same result"})["killed_fraction"]
    0.5
    >>> score({"a": 1, "b": 0, "c": 33, "d": 36}, {"b": "same result"})["with_equivalent"]
    0.75
    """
    killed = sorted(k for k, c in codes.items() if c in KILLED)
    alive = sorted(k for k in codes if k not in set(killed))
    equiv = [k for k in alive if k in equivalent]
    n = len(codes)
    return {
        "mutants": n,
        "killed": len(killed),
        "killed_fraction": len(killed) / n if n else float("nan"),
        "with_equivalent": (len(killed) + len(equiv)) / n if n else float("nan"),
        "survivors": [k for k in alive if k not in equivalent],
        "equivalent": {k: equivalent[k] for k in equiv},
        "no_tests": [k for k in alive if codes[k] in NO_TESTS],
        "not_run": [k for k in alive if codes[k] is None],
        "timeouts": sum(c in TIMEOUT for c in codes.values()),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--children", type=int, default=2, help="parallel mutant workers")
    p.add_argument("--report-only", action="store_true", help="score the last run, run nothing")
    args = p.parse_args()
    start = time.perf_counter()
    if not args.report_only:
        mutmut = Path(sys.executable).with_name("mutmut")
        cmd = [str(mutmut), "run", "--max-children", str(args.children), *SCOPE]
        # one thread per child: N children x the default thread count would oversubscribe the
        # cores, and spinning OpenMP threads make every small torch op slower
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        subprocess.run(cmd, check=False, env=env)
    got = score(results())
    for k in got["survivors"]:
        print(f"survived: {k}")
    for k, why in got["equivalent"].items():
        print(f"equivalent: {k}: {why}")
    print(
        f"mutation score: {got['killed']}/{got['mutants']} killed = "
        f"{got['killed_fraction']:.3f}; counting {len(got['equivalent'])} equivalent survivors "
        f"as killed: {got['with_equivalent']:.3f}; {len(got['no_tests'])} with no test, "
        f"{len(got['not_run'])} not run; {got['timeouts']} of the killed timed out; "
        f"{time.perf_counter() - start:.0f} s"
    )
    return 0 if got["with_equivalent"] >= 0.90 else 1


if __name__ == "__main__":
    sys.exit(main())
