"""Ingest throughput and latency: the full service against a bare Litestar app, alternated.

Both are served by the same uvicorn settings on one pinned core; `wrk` runs on the other with
`corpus.lua`, cycling through pre-signed, valid callbacks of distinct segments written by
`gme-recwatch simulate --write-corpus`. Each full-service run starts a fresh process (empty
store) and afterwards checks that the service counted every request wrk saw answered, and
answered nothing but 200.

    .venv/bin/python benchmarks/ingest.py --rounds 3 --duration 10 --connections 32
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET = "bench-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else []


def wait_ok(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start(
    kind: str, workdir: Path, extra_env: dict[str, str], stack: str = "auto", serve: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], str, str | None]:
    """A server on a free port, its callback URL and (full service) its admin URL. `serve`
    replaces the full service's `gme-recwatch serve` command."""
    port = free_port()
    log_path = workdir / f"{kind}-{port}.log"
    if kind == "bare" and stack == "granian":
        cmd = [
            *pin(1),
            str(BIN / "granian"),
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--no-ws",
            "--working-dir",
            str(ROOT / "benchmarks"),
            "--log-level",
            "warning",
            "bare_app:app",
        ]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_ok(f"http://127.0.0.1:{port}/healthz", proc)
        return proc, f"http://127.0.0.1:{port}/callback", None
    if kind == "bare":
        cmd = [
            *pin(1),
            str(BIN / "python"),
            str(ROOT / "benchmarks" / "bare_app.py"),
            "--port",
            str(port),
            "--stack",
            stack,
        ]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_ok(f"http://127.0.0.1:{port}/healthz", proc)
        return proc, f"http://127.0.0.1:{port}/callback", None
    admin = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GME_RECWATCH_"))}
    env.update(
        GME_RECWATCH_SECRET_KEY=SECRET,
        GME_RECWATCH_HOST="127.0.0.1",
        GME_RECWATCH_ADMIN_HOST="127.0.0.1",
        GME_RECWATCH_PORT=str(port),
        GME_RECWATCH_ADMIN_PORT=str(admin),
        GME_RECWATCH_LOG_LEVEL="info",
        GME_RECWATCH_LOG_FORMAT="json",
        GME_RECWATCH_HTTP_STACK=stack,
    )
    env.update(extra_env)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*pin(1), *(serve or [str(BIN / "gme-recwatch"), "serve"])],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_ok(f"http://127.0.0.1:{admin}/readyz", proc)
    return proc, f"http://127.0.0.1:{port}/callback", f"http://127.0.0.1:{admin}"


def run_wrk(url: str, corpus: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        *pin(0),
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--timeout",
        "5s",
        "-s",
        str(ROOT / "benchmarks" / "corpus.lua"),
        url,
        "--",
        str(corpus),
        str(args.threads),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=args.duration + 120)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    res: dict[str, Any] = json.loads(line[len("RESULT ") :])
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["errors"] = sum(
        res[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return res


def counted(admin: str) -> dict[str, float]:
    text = httpx.get(admin + "/metrics", timeout=10).text
    got = {
        "callbacks": 0.0,
        "http_200": 0.0,
        "http_other": 0.0,
        "rejected": 0.0,
        "accepted": 0.0,
        "tracked": 0.0,
    }
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "gme_recording_callbacks_total":
                got["callbacks"] += s.value
                got["accepted"] += s.value if s.labels["result"] in ("accepted", "out_of_order") else 0
            elif s.name == "gme_recording_http_requests_total" and s.labels["listener"] == "callback":
                got["http_200" if s.labels["code"] == "200" else "http_other"] += s.value
            elif s.name in ("gme_recording_signature_failures_total", "gme_recording_callbacks_invalid_total"):
                got["rejected"] += s.value
            elif s.name == "gme_recording_tracked_segments":
                got["tracked"] += s.value
    return got


def profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    spy = BIN / "py-spy"
    if not spy.exists():
        print("py-spy not installed in the venv; no profile", file=sys.stderr)
        return None
    return subprocess.Popen(
        [
            str(spy),
            "record",
            "-p",
            str(pid),
            "-d",
            str(seconds),
            "-r",
            "200",
            "--format",
            "raw",
            "-o",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def top_frames(raw: Path, n: int = 20) -> list[tuple[str, float, float]]:
    """(frame, self %, total %) from py-spy's collapsed stacks."""
    self_t: dict[str, int] = {}
    total_t: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        c = int(count)
        samples += c
        frames = stack.split(";")
        self_t[frames[-1]] = self_t.get(frames[-1], 0) + c
        for f in set(frames):
            total_t[f] = total_t.get(f, 0) + c
    rows = sorted(self_t.items(), key=lambda kv: -kv[1])[:n]
    return [(f, 100 * c / samples, 100 * total_t[f] / samples) for f, c in rows]


def wrk_arguments(doc: str | None, rounds: int = 3) -> argparse.ArgumentParser:
    """The options every wrk-driven benchmark takes."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--rooms", type=int, default=20000, help="corpus size: rooms x 4 users x 1 segment x 3 events"
    )
    p.add_argument("--out", default=os.environ.get("BENCH_OUT", "/tmp/gme-recwatch-bench"))
    return p


def corpus_for(out: Path, rooms: int) -> Path:
    """Pre-signed valid callbacks of distinct segments, written once by the simulator."""
    corpus = out / f"corpus-{rooms}.tsv"
    if not corpus.exists():
        subprocess.run(
            [
                str(BIN / "gme-recwatch"),
                "simulate",
                "--secret",
                SECRET,
                "--seed",
                "1",
                "--rooms",
                str(rooms),
                "--users-per-room",
                "4",
                "--segments-per-task",
                "1",
                "--mixed-fraction",
                "0",
                "--spread",
                "600",
                "--reorder-fraction",
                "0",
                "--duplicate-fraction",
                "0",
                "--drop-fraction",
                "0",
                "--never-complete-fraction",
                "0",
                "--never-upload-fraction",
                "0",
                "--bad-signature-fraction",
                "0",
                "--write-corpus",
                str(corpus),
            ],
            check=True,
        )
    return corpus


def main() -> int:
    p = wrk_arguments(__doc__)
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the full service (to measure a variant)",
    )
    p.add_argument("--profile", action="store_true", help="py-spy the last full-service run")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ingest-", dir=out))
    corpus = corpus_for(out, args.rooms)
    lines = sum(1 for _ in corpus.open("rb"))
    runs: list[dict[str, Any]] = []
    ok = True
    for rnd in range(args.rounds):
        for kind in ("bare", "full"):
            proc, url, admin = start(kind, work, dict(kv.split("=", 1) for kv in args.env))
            spy = None
            try:
                if args.profile and kind == "full" and rnd == args.rounds - 1:
                    spy = profile(proc.pid, args.duration, out / "ingest-profile.raw")
                res = run_wrk(url, corpus, args)
                res.update(kind=kind, round=rnd)
                if admin:
                    time.sleep(0.5)  # let requests wrk abandoned at its deadline finish
                    c = counted(admin)
                    res["service"] = c
                    # wrk stops with up to `connections` requests unanswered; the service may
                    # have counted those, never fewer than wrk saw answered.
                    res["lost"] = max(0, res["requests"] - int(c["callbacks"]))
                    res["unseen_by_wrk"] = int(c["callbacks"]) - res["requests"]
                    res["wrapped_corpus"] = res["requests"] > lines
                    good = (
                        res["errors"] == 0
                        and res["lost"] == 0
                        and c["http_other"] == 0
                        and c["rejected"] == 0
                        and c["callbacks"] == c["http_200"]
                        and 0 <= res["unseen_by_wrk"] <= args.connections
                    )
                    res["check"] = "ok" if good else "FAILED"
                    ok &= good
                else:
                    ok &= res["errors"] == 0
            finally:
                stop(proc)
                if spy is not None:
                    spy.wait(timeout=60)
            runs.append(res)
            print(
                f"round {rnd} {kind:4s}: {res['rps']:8.0f} req/s  p50 {res['p50_us'] / 1000:6.2f} ms  "
                f"p99 {res['p99_us'] / 1000:6.2f} ms  errors {res['errors']}"
                + (
                    f"  service counted {int(res['service']['callbacks'])} (wrk saw {res['requests']}) "
                    f"{res['check']}"
                    if admin
                    else ""
                ),
                flush=True,
            )

    def agg(kind: str) -> dict[str, float]:
        rs = [r for r in runs if r["kind"] == kind]
        return {
            "rps_mean": statistics.mean(r["rps"] for r in rs),
            "rps_min": min(r["rps"] for r in rs),
            "rps_max": max(r["rps"] for r in rs),
            "p50_ms_median": statistics.median(r["p50_us"] for r in rs) / 1000,
            "p99_ms_median": statistics.median(r["p99_us"] for r in rs) / 1000,
        }

    bare, full = agg("bare"), agg("full")
    pairs = [f["rps"] / b["rps"] for b, f in zip(runs[::2], runs[1::2], strict=True)]
    result = {
        "machine": machine(),
        "args": vars(args),
        "corpus_lines": lines,
        "runs": runs,
        "bare": bare,
        "full": full,
        "ratio_of_means": full["rps_mean"] / bare["rps_mean"],
        "ratio_per_round": pairs,
        "all_checks_ok": ok,
    }
    if args.profile and (out / "ingest-profile.raw").exists():
        result["profile_top"] = top_frames(out / "ingest-profile.raw")
    (out / "ingest.json").write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {k: result[k] for k in ("bare", "full", "ratio_of_means", "ratio_per_round", "all_checks_ok")},
            indent=2,
        )
    )
    if "profile_top" in result:
        print("py-spy top frames (self %, total %):")
        for f, s, t in result["profile_top"]:
            print(f"  {s:5.1f} {t:5.1f}  {f}")
    return 0 if ok else 1


def machine() -> dict[str, Any]:
    model = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "unknown"
    )
    return {"nproc": os.cpu_count(), "cpu": model, "python": sys.version.split()[0]}


if __name__ == "__main__":
    raise SystemExit(main())
