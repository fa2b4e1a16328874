"""``fmi bench``: what the fast memory costs, measured side by side in one run.

- write / forward: writing a batch of statements (keys at two sites, the correction value and
  the entropy, key-token positions) against the plain forward of the same batches that yields
  the answer-position logits (``logits_to_keep=answer_only(tokens)``, the cheapest forward that
  predicts the answer); the two alternate, and the ratio is of the medians.
- memory generation / plain generation: one-pass reading (``fmi.memory.inject``: retrieval inside
  the generation's own forward, the value added at the answer position) against plain greedy
  generation of the same prompts, same batches, same number of new tokens.
- retrieval per query at 1k/10k/100k entries, for a batch of real read prompts' states on a
  bank of that size, on the model's device: the full score matrix (``score_queries`` +
  ``decide``) and the exact search (``read_decide``: an int8 prefilter, float32 rescoring of
  what its bound cannot rule out), which must choose the same entries. The banks hold the
  written entries among synthetic ones (:func:`synthetic_bank`): a matrix product's time does
  not depend on the numbers in it, but the search's does, so ``fmi capacity`` also times both
  on a bank that is written whole.
- answers of 3 tokens (:func:`multi_token`): the teacher-forced write against the plain
  forward of the same texts with logits at the same positions, and memory generation (values
  following the stored answer, then the end value) against plain greedy generation.
- throughput: prompts per second of one-pass memory reading; peak resident memory.

The memory is fitted as ``fmi recall`` fits it (training split of the built-in task), so the
projector and the thresholds the search uses are the real ones.

The modules: :mod:`.config` (what it measures), :mod:`.memory` (the fitted memory and the
query states), :mod:`.measurements` (write, generation, peak memory), :mod:`.multi_token`,
:mod:`.bank` (synthetic banks), :mod:`.retrieval`, :mod:`.run` (:func:`~.run.run_bench`, the
whole document) and :mod:`.summary` (its printed lines).
"""

from analyses.bench.config import BenchConfig
from analyses.bench.run import run_bench
from analyses.bench.summary import summary_lines

__all__ = ["BenchConfig", "run_bench", "summary_lines"]
