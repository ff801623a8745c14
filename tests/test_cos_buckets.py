"""The COS checker's memory of buckets: kept for BUCKET_TTL, then learnt again. (Apart from
tests/test_cos.py, whose timing tests may be flaky under load, so that `make mutants` judges the
bucket cache by this alone.)"""

from __future__ import annotations

import asyncio
import time

from conftest import S3Server
from test_cos import BIZ, moto_config, unique_bucket

from gme_recwatch.cos import CosChecker, Found, NotFound


def test_the_bucket_is_looked_at_again_once_its_ttl_has_passed(s3_server: S3Server) -> None:
    """What was learnt of a bucket is kept for BUCKET_TTL, not for ever: a bucket deleted (or
    whose permissions changed) is noticed at the next missing file past it."""

    class Shifted:  # the real clock (the rate limit runs on it), moved on when told
        offset = 0.0

        def monotonic(self) -> float:
            return time.monotonic() + self.offset

        def time(self) -> float:
            return time.time() + self.offset

        def advance(self, seconds: float) -> None:
            self.offset += seconds

    bucket = s3_server.bucket(unique_bucket(), {"seen.mp3": b"x"})
    clock = Shifted()
    # A file found first: the evidence that lets the 404s below confirm (cos.py), kept past them.
    config = moto_config(s3_server, bucket, evidence_seconds=3600.0)

    async def go() -> list[int]:
        async with CosChecker(config, bucket_ttl=300.0, clock=clock) as checker:
            assert isinstance(await checker.check(BIZ, "seen.mp3"), Found)
            checker.requests = 0
            counts = []
            for advance in (0.0, 298.0, 2.0):
                clock.advance(advance)
                assert isinstance(await checker.check(BIZ, f"{advance}.mp3"), NotFound)
                counts.append(checker.requests)
            return counts

    # the object, then the bucket; within the TTL the object alone; at the TTL both again
    assert asyncio.run(go()) == [2, 3, 5]
