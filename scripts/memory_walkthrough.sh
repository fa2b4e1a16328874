#!/usr/bin/env bash
# The `fmi memory` walk-through of docs/quickstart.md (an excerpt in the README): every command,
# then its output. Usage:
#   scripts/memory_walkthrough.sh [MODEL] [FILE]     (default gemma-3-270m, a temp file)
set -euo pipefail
MODEL=${1:-gemma-3-270m}
FILE=${2:-$(mktemp -d)/facts.fmi}
FMI=${FMI:-.venv/bin/fmi}
# print each argument bare if it is plain, else in double quotes (what you would type)
q() { if [[ $1 =~ ^[A-Za-z0-9_./:=-]+$ ]]; then printf '%s' "$1"; else printf '"%s"' "${1//\"/\\\"}"; fi; }
run() {
  local line="$ fmi" a
  for a in "$@"; do line+=" $(q "$a")"; done
  printf '%s\n' "$line"
  "$FMI" "$@" 2>/dev/null
}
run memory new "$FILE" --model "$MODEL"
run memory write "$FILE" "Alice's favourite drink is" " green tea" --symbol Alice
run memory write "$FILE" "Bob grew up in" " Salt Lake City" --symbol Bob
run memory write "$FILE" "In game A, the blicket is" " red" --symbol blicket --context "game A"
run memory list "$FILE"
run memory ask "$FILE" "Question: what is Alice's favourite drink? Answer:" --explain
run memory ask "$FILE" "Question: where did Bob grow up? Answer:" --explain
run memory ask "$FILE" "Question: in game A, what is the blicket? Answer:" --explain
run memory ask "$FILE" "Question: what is the capital of France? Answer:" --explain
run memory write "$FILE" "Alice's favourite drink is" " black coffee" --symbol Alice
run memory delete "$FILE" 1
run memory list "$FILE"
run memory ask "$FILE" "Question: what is Alice's favourite drink? Answer:" --explain
run memory ask "$FILE" "Question: where did Bob grow up? Answer:" --explain
