#!/usr/bin/env bash
# Every benchmark, in one go: `make bench` calls this. Results (JSON, corpus, py-spy profile,
# service logs) go to $BENCH_OUT (default /tmp/gme-recwatch-bench); the tables print here.
# Needs wrk (`make system-deps`) and, for the ingest profile, py-spy in the venv
# (`make bench PROFILE=1` installs it); without py-spy the profile is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export BENCH_OUT=${BENCH_OUT:-/tmp/gme-recwatch-bench}
mkdir -p "$BENCH_OUT"
echo "== machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $($PY -V)"
echo "== 1. ingest: full service vs bare Litestar (wrk, alternated)"
$PY benchmarks/ingest.py --rounds "${ROUNDS:-3}" --duration "${DURATION:-10}" --connections 32 --threads 1 \
    ${PROFILE:+--profile}
echo "== 2. memory per tracked segment"
$PY benchmarks/memory.py
echo "== 3. /metrics scrape time"
$PY benchmarks/scrape.py
echo "== 4. store transitions and deadline sweep"
$PY benchmarks/store_ops.py
echo "== 5. the Redis store: ingest against in-memory, memory per segment, scrape, sweep"
$PY benchmarks/ingest_backends.py --rounds "${ROUNDS:-3}" --duration "${DURATION:-10}"
$PY benchmarks/redis_store.py
echo "== 6. per-callback cost of the intake pipeline (explains 1.)"
(cd benchmarks && ../$PY intake_cost.py)
echo "== 11. listing a recording stream's COS folder (moto: requests are COS's, times are not)"
(cd benchmarks && ../$PY listing.py)
