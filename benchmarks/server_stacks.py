"""Server stacks side by side: today's uvicorn (asyncio + h11), uvicorn on uvloop + httptools,
and granian, each serving the bare Litestar handler; and the full service on both uvicorn
stacks. Alternated rounds, ingest.py's method (wrk on one core, the server pinned to the other,
a fresh process per run, the full service's counts checked).

    .venv/bin/python benchmarks/server_stacks.py --rounds 5 --duration 10
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest

CONFIGS = [("bare", "python"), ("bare", "auto"), ("bare", "granian"), ("full", "python"), ("full", "auto")]


def main() -> int:
    p = ingest.wrk_arguments(__doc__, rounds=5)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="stacks-", dir=out))
    corpus = ingest.corpus_for(out, args.rooms)
    runs: list[dict[str, Any]] = []
    ok = True
    for rnd in range(args.rounds):
        for kind, stack in CONFIGS:
            proc, url, admin = ingest.start(kind, work, {}, stack)
            try:
                res = ingest.run_wrk(url, corpus, args)
                good = res["errors"] == 0
                if admin:
                    time.sleep(0.5)
                    c = ingest.counted(admin)
                    good &= c["http_other"] == 0 and c["rejected"] == 0 and c["callbacks"] >= res["requests"]
            finally:
                ingest.stop(proc)
            ok &= good
            res.update(kind=kind, stack=stack, round=rnd, check="ok" if good else "FAILED")
            runs.append(res)
            print(
                f"round {rnd} {kind:4s} {stack:7s}: {res['rps']:8.0f} req/s  "
                f"p50 {res['p50_us'] / 1000:6.2f} ms  p99 {res['p99_us'] / 1000:6.2f} ms  "
                f"{res['check']}",
                flush=True,
            )
    summary: dict[str, Any] = {}
    for kind, stack in CONFIGS:
        rs = [r for r in runs if (r["kind"], r["stack"]) == (kind, stack)]
        summary[f"{kind}/{stack}"] = {
            "rps_median": round(statistics.median(r["rps"] for r in rs)),
            "p50_ms_median": round(statistics.median(r["p50_us"] for r in rs) / 1000, 2),
            "p99_ms_median": round(statistics.median(r["p99_us"] for r in rs) / 1000, 2),
        }

    def ratios(a: tuple[str, str], b: tuple[str, str]) -> list[float]:
        by_round = {(r["round"], r["kind"], r["stack"]): r["rps"] for r in runs}
        return [round(by_round[(i, *a)] / by_round[(i, *b)], 3) for i in range(args.rounds)]

    summary["full_auto_over_bare_auto"] = ratios(("full", "auto"), ("bare", "auto"))
    summary["full_auto_over_full_python"] = ratios(("full", "auto"), ("full", "python"))
    summary["bare_granian_over_bare_auto"] = ratios(("bare", "granian"), ("bare", "auto"))
    summary["all_checks_ok"] = ok
    (out / "server-stacks.json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))
    print(json.dumps(summary, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
