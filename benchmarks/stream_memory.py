"""What a recording stream's record costs (#28), in Redis and in memory: segments filled through
``record()``, each in a stream of its own (4 users a room, SeqNo 0: ``_fill.events``), so that
every segment brings one stream record; run it on this tree and on one before streams existed
(``PYTHONPATH=<old tree>/src``) and the difference per segment is the stream's cost.

    redis-server --port 6398 --save "" --appendonly no --daemonize yes
    .venv/bin/python benchmarks/stream_memory.py new
    .venv/bin/python benchmarks/memory.py 100000 recording 1   # the in-memory store's figure
"""

from __future__ import annotations

import asyncio
import sys

import redis

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _fill import events

from gme_recwatch.clock import FakeClock
from gme_recwatch.settings import Settings
from gme_recwatch.stores.redis import RedisStore


async def main(prefix: str) -> None:
    r = redis.Redis(port=6398)
    r.flushall()
    before = r.info("memory")["used_memory"]
    st = RedisStore.from_url(
        "redis://127.0.0.1:6398/0",
        Settings(max_segments=1_000_000).lifecycle(),
        prefix=prefix,
        clock=FakeClock(),
    )
    n = 20000
    await asyncio.gather(*(st.record(ev) for ev in events(n)))
    after = r.info("memory")["used_memory"]
    print(sys.argv[1], (after - before) / n, "bytes per segment (each its own stream)")
    await st.close()


if __name__ == "__main__":
    asyncio.run(main("{gme-recwatch}:"))
