"""Ingest with the Redis store against the in-memory store: the same service, alternated rounds.

Uses ingest.py's method (wrk with corpus.lua on pre-signed callbacks of distinct segments, the
service pinned to one core, a fresh process per round, every answer checked against what the
service counted) and runs a redis-server of its own, pinned to the core wrk uses, so the service
keeps its core. Each Redis round gets a fresh key prefix.

    .venv/bin/python benchmarks/ingest_backends.py --rounds 5 --duration 10
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import ingest
from conftest import RedisServer


def main() -> int:
    p = ingest.wrk_arguments(__doc__, rounds=5)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ingest-backends-", dir=out))
    corpus = ingest.corpus_for(out, args.rooms)
    redis = RedisServer(work / "redis")
    if ingest.pin(0):
        subprocess.run(["taskset", "-cp", "0", str(redis.proc.pid)], check=True, capture_output=True)
    runs: list[dict[str, Any]] = []
    ok = True
    try:
        for rnd in range(args.rounds):
            for kind in ("memory", "redis"):
                env = (
                    {}
                    if kind == "memory"
                    else {
                        "GME_RECWATCH_REDIS_URL": redis.url,
                        "GME_RECWATCH_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:",
                    }
                )
                proc, url, admin = ingest.start("full", work, env)
                try:
                    res = ingest.run_wrk(url, corpus, args)
                    time.sleep(0.5)
                    assert admin is not None
                    c = ingest.counted(admin)
                    good = (
                        res["errors"] == 0
                        and c["http_other"] == 0
                        and c["rejected"] == 0
                        and c["callbacks"] >= res["requests"]
                    )
                    ok &= good
                finally:
                    ingest.stop(proc)
                res.update(kind=kind, round=rnd, check="ok" if good else "FAILED")
                runs.append(res)
                print(
                    f"round {rnd} {kind:6s}: {res['rps']:8.0f} req/s  p50 {res['p50_us'] / 1000:6.2f} ms  "
                    f"p99 {res['p99_us'] / 1000:6.2f} ms  {res['check']}",
                    flush=True,
                )
    finally:
        redis.stop()

    def agg(kind: str) -> dict[str, float]:
        rs = [r for r in runs if r["kind"] == kind]
        return {
            "rps_median": statistics.median(r["rps"] for r in rs),
            "p50_ms_median": statistics.median(r["p50_us"] for r in rs) / 1000,
            "p99_ms_median": statistics.median(r["p99_us"] for r in rs) / 1000,
        }

    memory, redis_ = agg("memory"), agg("redis")
    ratios = [r["rps"] / m["rps"] for m, r in zip(runs[::2], runs[1::2], strict=True)]
    result = {
        "machine": ingest.machine(),
        "memory": memory,
        "redis": redis_,
        "ratio_per_round": ratios,
        "ratio_median": statistics.median(ratios),
        "all_checks_ok": ok,
    }
    (out / "ingest-backends.json").write_text(json.dumps({**result, "runs": runs}, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
