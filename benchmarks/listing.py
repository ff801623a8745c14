"""Requests and wall time of listing one recording stream's COS folder (#28), against moto's S3.

For N files in the folder (N = 2, 20, 200, 2000 by default: one task's segments, or a long-lived
stream's history), ``CosChecker.list_stream`` as the reconciler calls it, in two layouts:

* ``single``: a single stream (RecordMode 0), the user's folder: one prefix.
* ``mixed_with_user``: a mixed stream whose files are in the user's folder (the layout of the
  sample on Tencent's page): the room's folder is listed first, empty, then the user's. The
  worst case of the documented layouts: one more request.

Requests are what COS bills (``Listing.requests``: ListObjects pages, retries, a sight check);
moto runs on this machine, so its wall time is this client's and moto's cost, NOT COS latency
(add a round trip to COS, tens of ms in region, per page). The checker's rate limit is raised
to 10,000/s so it does not pace the measurement; at the default 20 requests/s a list of p pages
takes at least p/20 s of the shared budget.

    .venv/bin/python benchmarks/listing.py [--sizes 2,20,200,2000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _fill import machine

from gme_recwatch.cos import LIST_MAX_PAGES, LIST_PAGE_KEYS, CosChecker, CosConfig, Listing, locate

BIZ = 1400000000
TASK = 446946705284000000
REGION = "ap-guangzhou"
KEYS = ("bench-id", "bench-secret")  # moto without IAM accepts any key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/moto-api/data.json", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"moto did not start: {log.read_text()}")


def s3_client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=KEYS[0],
        aws_secret_access_key=KEYS[1],
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16),
    )


def fill(url: str, bucket: str, folder: str, n: int) -> list[str]:
    """``n`` files of the task in ``folder``, one a minute, in the sample's naming (no SeqNo)."""
    s3 = s3_client(url)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    names = [
        f"{folder}/{time.strftime('%Y-%m-%d-%H-%M-%S', time.gmtime(1_700_000_000 + 60 * i))}_{TASK}_audio.mp3"
        for i in range(n)
    ]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: s3.put_object(Bucket=bucket, Key=name, Body=b"x"), names))
    return names


async def measure(url: str, bucket: str, mode: int, anchor: str, n: int, repeat: int) -> dict[str, Any]:
    config = CosConfig(
        region=REGION,
        default_bucket=bucket,
        endpoint=url,
        requests_per_second=10_000,
        list_max_pages=max(LIST_MAX_PAGES, n // LIST_PAGE_KEYS + 1),
        credentials=None,
    )
    times, requests = [], set()
    async with CosChecker(config) as checker:
        await checker.list_stream(BIZ, room_id="100", user_id="999", record_mode=mode, task_id=TASK)  # warm
        for _ in range(repeat):
            started = time.perf_counter()
            got = await checker.list_stream(BIZ, room_id="100", user_id="999", record_mode=mode, task_id=TASK)
            times.append(time.perf_counter() - started)
            assert isinstance(got, Listing) and len(got.files) == n, got
            requests.add(got.requests)
    # The listing must be usable, not only fast: the anchor (the last file) places all earlier ones.
    assert locate(got, TASK, 0, anchor, n - 1).file == got.files[0]
    (reqs,) = requests
    return {
        "files": n,
        "requests_per_list": reqs,
        "median_ms": round(statistics.median(times) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
        "requests_per_10k_lists": reqs * 10_000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2,20,200,2000")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    out = Path(os.environ.get("BENCH_OUT", tempfile.gettempdir()))
    out.mkdir(parents=True, exist_ok=True)
    proc, url = start_moto(out / "listing-moto.log")
    rows = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            for layout, mode in (("single", 0), ("mixed_with_user", 1)):
                bucket = f"bench-{layout.replace('_', '-')}-{n}"
                names = fill(url, bucket, f"{BIZ}_100_999", n)
                row = asyncio.run(measure(url, bucket, mode, names[-1], n, args.repeat))
                rows.append({"layout": layout, **row})
                print(
                    f"{layout:16} {n:5} files: {row['requests_per_list']} requests/list, "
                    f"median {row['median_ms']} ms, max {row['max_ms']} ms",
                    flush=True,
                )
    finally:
        proc.terminate()
        proc.wait(10)
    result = {"machine": machine(), "repeat": args.repeat, "rows": rows}
    (out / "listing.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
