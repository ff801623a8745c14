"""The edge under the attacks of issue #26, before and after: the full service (`serve`, in-memory
store) with this tree's code and with another tree's (``--before``, e.g. a `git archive` of the
commit before the edge work, put first on PYTHONPATH), alternated; the median of the rounds.

Per variant: the throughput of valid signed callbacks (wrk, as ingest.py), then each attack on
its own fresh process:

- ``headers``: 5 connections stream 1 KB header lines for 3 s: peak RSS growth, RSS left after
  they close, the slowest of a signed callback and /readyz answered meanwhile;
- ``slow``: 1,100 connections that send half a request line and stop, under a 1,024 file limit:
  whether /readyz and a signed callback are still answered (and how fast), descriptors in use;
- ``flood``: unsigned junk for 5 s on 8 connections: requests, log lines written, lines a minute.

    .venv/bin/python benchmarks/edge.py --before /tmp/edge-before/src --rounds 3 --duration 5
"""

from __future__ import annotations

import json
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest

from gme_recwatch.events import encode_callback
from gme_recwatch.signature import sign


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def signed_and_ready(url: str, admin: str, n: int) -> float:
    """Seconds of the slower of a signed callback and /readyz (inf: not answered within 5 s)."""
    body = encode_callback(
        biz_id=1400000000,
        room_id=f"probe-{n}",
        user_id="u",
        task_id=1,
        seq_no=0,
        event_type=1,
        record_mode=1,
        timestamp=int(time.time()),
    )
    worst = 0.0
    for call in (
        lambda: httpx.post(url, content=body, headers={"Signature": sign(body, ingest.SECRET)}, timeout=5),
        lambda: httpx.get(admin + "/readyz", timeout=5),
    ):
        t = time.monotonic()
        try:
            ok = call().status_code == 200
        except httpx.HTTPError:
            ok = False
        worst = max(worst, time.monotonic() - t if ok else float("inf"))
    return worst


def attack_headers(url: str, admin: str, pid: int) -> dict[str, Any]:
    port = int(url.split(":")[2].split("/")[0])
    start = rss(pid)
    peak, latencies = start, []
    stop = time.monotonic() + 3
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    for s in socks:
        s.sendall(b"POST /callback HTTP/1.1\r\nHost: x\r\n")
    line = b"X-A: " + b"a" * 1000 + b"\r\n"

    def stream(s: socket.socket) -> None:
        try:
            while time.monotonic() < stop:
                s.sendall(line * 16)
        except OSError:
            pass

    threads = [threading.Thread(target=stream, args=(s,), daemon=True) for s in socks]
    for t in threads:
        t.start()
    n = 0
    while time.monotonic() < stop:
        latencies.append(signed_and_ready(url, admin, n))
        peak = max(peak, rss(pid))
        n += 1
        time.sleep(0.2)
    for t in threads:
        t.join()
    for s in socks:
        s.close()
    time.sleep(1)
    return {
        "rss_start_mib": start / 2**20,
        "rss_growth_peak_mib": (peak - start) / 2**20,
        "rss_left_after_mib": (rss(pid) - start) / 2**20,
        "slowest_answer_s": max(latencies),
    }


def attack_slow(url: str, admin: str, pid: int) -> dict[str, Any]:
    port = int(url.split(":")[2].split("/")[0])
    before = fds(pid)
    socks = []
    for _ in range(1100):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.sendall(b"POST /call")
            socks.append(s)
        except OSError:
            break
    time.sleep(1)
    answer = signed_and_ready(url, admin, 0)
    used = fds(pid)
    for s in socks:
        s.close()
    return {"connections_opened": len(socks), "fds_before": before, "fds_during": used, "answer_s": answer}


def attack_flood(url: str, log: Path, seconds: float = 5.0) -> dict[str, Any]:
    lines_before = len(log.read_bytes().splitlines())
    count = [0]
    stop = time.monotonic() + seconds

    def worker() -> None:
        with httpx.Client(timeout=5) as c:
            while time.monotonic() < stop:
                c.post(url, content=b"x", headers={"Signature": "abc"})
                count[0] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.5)
    lines = len(log.read_bytes().splitlines()) - lines_before
    return {"requests": count[0], "log_lines": lines, "log_lines_per_minute": lines * 60 / seconds}


def one(work: Path, env: dict[str, str], attack: str) -> dict[str, Any]:
    proc, url, admin = _start(work, env, 1024 if attack == "slow" else None)
    assert admin is not None
    try:
        if attack == "headers":
            return attack_headers(url, admin, proc.pid)
        if attack == "slow":
            return attack_slow(url, admin, proc.pid)
        log = max(work.glob("full-*.log"), key=lambda p: p.stat().st_mtime)
        return attack_flood(url, log)
    finally:
        ingest.stop(proc)


def _start(work: Path, env: dict[str, str], nofile: int | None) -> tuple[Any, str, str | None]:
    if nofile is None:
        return ingest.start("full", work, env)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))  # inherited by the service
    try:
        return ingest.start("full", work, env)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def main() -> int:
    p = ingest.wrk_arguments(__doc__, rounds=3)
    p.add_argument("--before", default="", help="a source tree (its src/) run as 'before'")
    p.add_argument("--attacks-only", action="store_true", help="no wrk throughput runs")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="edge-", dir=out))
    corpus = ingest.corpus_for(out, args.rooms)
    variants = {"after": {}} | ({"before": {"PYTHONPATH": args.before}} if args.before else {})
    results: dict[str, dict[str, list[Any]]] = {v: {} for v in variants}
    for _ in range(args.rounds):
        for name, env in variants.items():
            if not args.attacks_only:
                proc, url, _ = ingest.start("full", work, env)
                try:
                    res = ingest.run_wrk(url, corpus, args)
                finally:
                    ingest.stop(proc)
                results[name].setdefault("rps", []).append(res["rps"])
            for attack in ("headers", "slow", "flood"):
                results[name].setdefault(attack, []).append(one(work, env, attack))
    summary: dict[str, Any] = {}
    for name, by in results.items():
        rps = by.get("rps", [])
        summary[name] = {"rps_median": statistics.median(rps) if rps else None, "rps": rps}
        for attack in ("headers", "slow", "flood"):
            runs = by[attack]
            summary[name][attack] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
