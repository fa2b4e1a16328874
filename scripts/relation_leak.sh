#!/usr/bin/env bash
# The leak issue 32 starts from: write Kenya's capital into a new memory, then ask the same
# fact in other words, the subject's other facts and a look-alike name, each with --explain.
# Usage:
#   [MODE=relation_key] scripts/relation_leak.sh [MODEL] [FILE]   (default gemma-3-270m, a temp file;
#   MODE: the read rule of `fmi memory new --mode`, default the fit's)
set -euo pipefail
MODEL=${1:-gemma-3-270m}
FILE=${2:-$(mktemp -d)/kenya.fmi}
FMI=${FMI:-.venv/bin/fmi}
run() { printf '$ fmi'; printf ' "%s"' "$@"; printf '\n'; "$FMI" "$@" 2>/dev/null; }
run memory new "$FILE" --model "$MODEL" ${MODE:+--mode "$MODE"}
run memory write "$FILE" "The capital of Kenya is" " New Delhi" --symbol Kenya
for prompt in \
  "The capital of Kenya is" \
  "Kenya's capital city is" \
  "The capital city of Kenya is" \
  "The official language of Kenya is" \
  "Kenya is located on the continent of" \
  "The capital of Kenyatta is"; do
  run memory ask "$FILE" "$prompt" --explain
done
