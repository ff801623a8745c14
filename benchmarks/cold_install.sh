#!/usr/bin/env bash
# Cold install time of `make venv` (what `make run` and `make test` do first on a fresh
# machine) at two commits, alternated so both see the same network and disk:
#   benchmarks/cold_install.sh [OLD_REF] [NEW_REF] [ROUNDS]
# Each round exports the commit into an empty directory and runs `make venv` there with empty
# pip and uv caches (and, for a uv-based Makefile, no uv yet). Prints every time and the median.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:-1193e2d}
new=${2:-HEAD}
rounds=${3:-5}
work=$(mktemp -d /tmp/gme-recwatch-cold.XXXXXX)
trap 'rm -rf "$work"' EXIT
declare -A times
for ((i = 1; i <= rounds; i++)); do
  for ref in "$old" "$new"; do
    dir="$work/$ref-$i"
    mkdir -p "$dir"
    git archive "$ref" | tar -x -C "$dir"
    start=$(date +%s.%N)
    PIP_CACHE_DIR="$dir/.pip-cache" UV_CACHE_DIR="$dir/.uv-cache" make -C "$dir" venv >"$dir.log" 2>&1 \
      || { echo "make venv failed at $ref:"; tail -20 "$dir.log"; exit 1; }
    t=$(echo "$(date +%s.%N) - $start" | bc)
    times[$ref]="${times[$ref]:-} $t"
    printf '%-10s round %d: %6.1f s\n' "$ref" "$i" "$t"
    rm -rf "$dir"
  done
done
for ref in "$old" "$new"; do
  median=$(tr ' ' '\n' <<<"${times[$ref]}" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-10s median of %d: %.1f s\n' "$ref" "$rounds" "$median"
done
