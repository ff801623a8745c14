"""Ingest with the Redis store against the in-memory store: the same service, alternated rounds.
With --cluster, another kind in every round: the Redis store on a Redis Cluster of three masters
with a replica each (tests/conftest.py RedisClusterServers, `redis+cluster://`). With
--variant unbatched, another: the Redis store writing each callback in its own script call, up
to the pool's 32 at once, as before batching (stores/redis.py RECORD_BATCH = 1, RECORD_FLIGHTS =
32); --variant flights4 or flights8: batches with 4 or 8 script calls in flight (VARIANTS).

Uses ingest.py's method (wrk with corpus.lua on pre-signed callbacks of distinct segments, the
service pinned to one core, a fresh process per round, every answer checked against what the
service counted) and runs a redis-server of its own, pinned to the core wrk uses, so the service
keeps its core. Each Redis round gets a fresh key prefix.

    .venv/bin/python benchmarks/ingest_backends.py --rounds 5 --duration 10 --cluster

Each round's load average (1 min) is kept: the machine may be shared, and alternating the kinds
within a round is what keeps the ratios fair when it is. So is the CPU time each request cost the
service and the Redis processes (from /proc: what a busy neighbour does not inflate the way it
inflates latency): 1e6 / service_cpu_us is callbacks per second per replica core, 1e6 /
redis_cpu_us per Redis core (for the cluster, the store's master; its replica's cost is shown
apart).
"""

from __future__ import annotations

import json
import os
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
from conftest import RedisClusterServers, RedisServer

from gme_recwatch.stores.redis import hash_tagged

PREFIX = "GME_RECWATCH_REDIS_PREFIX"
VARIANTS = {
    "unbatched": "r.RECORD_BATCH = 1; r.RECORD_FLIGHTS = r.MAX_CONNECTIONS",
    "flights4": "r.RECORD_FLIGHTS = 4",
    "flights8": "r.RECORD_FLIGHTS = 8",
}


def variant(change: str) -> list[str]:
    """`gme-recwatch serve` with the Redis store's batching changed as `change` says."""
    return [
        str(ingest.BIN / "python"),
        "-c",
        f"import sys; import gme_recwatch.stores.redis as r; {change}; "
        "from gme_recwatch.cli import main; sys.exit(main(['serve']))",
    ]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    p = ingest.wrk_arguments(__doc__, rounds=5)
    p.add_argument("--cluster", action="store_true", help="also a Redis Cluster in every round")
    p.add_argument("--variant", action="append", default=[], choices=sorted(VARIANTS), help="also this variant")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ingest-backends-", dir=out))
    corpus = ingest.corpus_for(out, args.rooms)
    redis = RedisServer(work / "redis")
    cluster = RedisClusterServers(work / "cluster") if args.cluster else None
    if ingest.pin(0):
        for server in [redis, *(cluster.nodes if cluster else [])]:
            subprocess.run(["taskset", "-cp", "0", str(server.proc.pid)], check=True, capture_output=True)
    kinds = ("memory", "redis", *args.variant, *(["cluster"] if cluster else []))
    runs: list[dict[str, Any]] = []
    ok = True
    try:
        for rnd in range(args.rounds):
            for kind in kinds:
                env = (
                    {}
                    if kind == "memory"
                    else {
                        "GME_RECWATCH_REDIS_URL": cluster.url if cluster and kind == "cluster" else redis.url,
                        PREFIX: f"bench-{uuid.uuid4().hex[:8]}:",
                    }
                )
                load = os.getloadavg()[0]
                serve = variant(VARIANTS[kind]) if kind in VARIANTS else None
                proc, url, admin = ingest.start("full", work, env, serve=serve)
                if kind == "redis" or kind in VARIANTS:
                    servers = {"master": redis.proc.pid}
                elif kind == "cluster" and cluster:
                    master, (standby, *_) = cluster.master_of(cluster.keyslot(hash_tagged(env[PREFIX]) + "t"))
                    servers = {"master": master.proc.pid, "replica": standby.proc.pid}
                else:
                    servers = {}
                try:
                    before = {k: cpu_seconds(pid) for k, pid in {"service": proc.pid, **servers}.items()}
                    res = ingest.run_wrk(url, corpus, args)
                    for k, pid in {"service": proc.pid, **servers}.items():
                        res[f"{k}_cpu_us"] = (cpu_seconds(pid) - before[k]) / res["requests"] * 1e6
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
                res.update(kind=kind, round=rnd, check="ok" if good else "FAILED", load1=load)
                runs.append(res)
                print(
                    f"round {rnd} {kind:7s}: {res['rps']:8.0f} req/s  p50 {res['p50_us'] / 1000:6.2f} ms  "
                    f"p99 {res['p99_us'] / 1000:6.2f} ms  load {load:5.2f}  "
                    f"cpu/req: service {res['service_cpu_us']:4.0f} us, "
                    f"redis {res.get('master_cpu_us', 0):4.0f} us  "
                    f"{res['check']}",
                    flush=True,
                )
    finally:
        redis.stop()
        if cluster:
            cluster.stop()

    def agg(kind: str) -> dict[str, float]:
        rs = [r for r in runs if r["kind"] == kind]
        return {
            "rps_median": statistics.median(r["rps"] for r in rs),
            "p50_ms_median": statistics.median(r["p50_us"] for r in rs) / 1000,
            "p99_ms_median": statistics.median(r["p99_us"] for r in rs) / 1000,
            "service_cpu_us_median": statistics.median(r["service_cpu_us"] for r in rs),
            **(
                {"redis_cpu_us_median": statistics.median(r["master_cpu_us"] for r in rs)}
                if kind != "memory"
                else {}
            ),
        }

    def ratios(kind: str) -> list[float]:
        mem = {r["round"]: r["rps"] for r in runs if r["kind"] == "memory"}
        return [r["rps"] / mem[r["round"]] for r in runs if r["kind"] == kind]

    result: dict[str, Any] = {"machine": ingest.machine(), "all_checks_ok": ok}
    for kind in kinds:
        result[kind] = agg(kind)
    for kind in kinds[1:]:
        result[f"{kind}_ratio_per_round"] = ratios(kind)
        result[f"{kind}_ratio_median"] = statistics.median(ratios(kind))
    result["load1_per_round"] = [r["load1"] for r in runs]
    (out / "ingest-backends.json").write_text(json.dumps({**result, "runs": runs}, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
