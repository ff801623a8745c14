"""The shared store: segment state in Valkey or Redis (>= 7), for any number of replicas.

Every change is one call of ``redis_lifecycle.lua``, which Redis runs atomically: a callback is
answered only after its effect is in Redis, and when several replicas sweep at once each
deadline fires in exactly one of them. Deadlines run on Redis's own clock (``TIME``), the one
every replica agrees on. The script holds the lifecycle rules of :mod:`..lifecycle` in Lua; the
conformance suite (tests/test_stores.py) holds both stores to the same behaviour. What the
replicas know of each other and of the store -- heartbeats, and the epoch marker whose loss says
the store came back empty -- is ``redis_replicas.lua``, which never touches a segment.

Gauges describe the shared state (every replica exports the same values: aggregate them with
``max``). Counters count what *this* replica did -- the transitions its sweeps applied, the
completions it received -- so summing them over replicas gives the truth.

Every key carries one hash tag (:func:`hash_tagged`), so each script call touches one slot and
names the keys it is routed by in KEYS: the same keys work on a standalone Redis or Valkey, on a
Redis Cluster (``redis+cluster://``: redis-py's cluster client, which follows MOVED and ASK) and
behind a cluster proxy (TencentDB for Redis cluster edition: one endpoint, ``redis://``). The
whole store is one slot, so one shard: docs/design.md says why, and docs/capacity.md how far
that goes.

Callbacks that arrive together are written together (:meth:`RedisStore.record`): one script
call for a batch, one outcome for each callback, each answered only once the batch landed.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
import uuid
from collections.abc import Sequence
from importlib import resources
from typing import Any, Final, cast

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import AuthenticationError, RedisClusterException, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from ..clock import Clock
from ..events import MODE_NAMES, Event, RecordMode
from ..lifecycle import (
    EVENT_LABEL,
    INF,
    SEEN_BIT,
    SEEN_COMPLETED,
    SEEN_STARTED,
    SEEN_UPLOADED,
    SEP,
    STATE_NAMES,
    Backoff,
    Check,
    CheckAnswer,
    Claim,
    Config,
    Outcome,
    Reconciled,
    Resolution,
    Result,
    Retrying,
    State,
    TailClaim,
    Transition,
    deadline_passed,
    events_seen,
    key_of,
    split_key,
)
from .base import (
    CheckNote,
    Epoch,
    EpochStatus,
    SegmentPage,
    SegmentView,
    StoreStats,
    StoreUnavailable,
    Sweep,
    page_of,
)

_SCRIPT: Final = resources.files(__package__).joinpath("redis_lifecycle.lua").read_text()
_REPLICAS: Final = resources.files(__package__).joinpath("redis_replicas.lua").read_text()
_RESULTS: Final = (Result.ACCEPTED, Result.DUPLICATE, Result.OUT_OF_ORDER, Result.LATE)
_FORMAT: Final = struct.Struct("<BbBBHdddddd")
# The script's seg.flags: bit 0 the start-lost mark, then the COS check (2 bits), then the
# events found lost (the `seen` bits of completed and uploaded), and bit 5 a start found lost
# (an unannounced segment's). tests/test_lifecycle.py holds
# the script's constants to these.
_FLAG_START_LOST: Final = 1
_FLAG_CHECK_SHIFT: Final = 1
_FLAG_LOST_SHIFT: Final = 2
_FLAG_LOST_START: Final = 32
_PROBLEMS: Final = (State.STUCK, State.UPLOAD_MISSING, State.ORPHAN, State.UNANNOUNCED)
_SCAN_BATCH: Final = 1000
MAX_CONNECTIONS: Final = 32
# maxmemory-policy values that never evict a key of ours: noeviction refuses writes when Redis is
# full (a 503, retried by Tencent, and GmeRecwatchBackendDown); volatile-* evict only keys with a
# TTL, and of ours only the COS lookup notes (ck:) have one -- the API then shows no lookup
# detail, nothing more. allkeys-* would evict segments, tallies and the epoch marker at random.
SAFE_POLICIES: Final = frozenset(
    {"noeviction", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"}
)
MIN_VERSION: Final = 7
SWEEP_BATCH: Final = 500
# Callbacks written by one script call at most, and such calls in flight at once per replica. A
# callback that finds fewer than RECORD_FLIGHTS in flight is sent at once (no added wait when
# idle); the ones arriving meanwhile go together in the next call (benchmarks/ingest_backends.py).
RECORD_BATCH: Final = 64
RECORD_FLIGHTS: Final = 2
# What a store call may raise: the cluster client's own errors (no node reachable, a slot no
# master serves) are not RedisErrors.
_FAILURES: Final = (RedisError, RedisClusterException, OSError)
CLUSTER_SCHEMES: Final = ("redis+cluster://", "rediss+cluster://")
# The lifecycle script's keys that are not a segment's: every call names them in KEYS, with the
# segments it is given. Redis then runs a call only where all of them are (or refuses it before
# it writes anything: MOVED, ASK, TRYAGAIN while a migration splits them).
_FIXED_KEYS: Final = (
    "t",
    "due",
    "upl",
    "chk",
    "bw",
    "sb",
    "lbw",
    "sr",
    "sdue",
    "tails",
    "slru",
    "since",
    "ns",
    "apps",
    "applist",
    "rooms",
    "age",
    "seq",
    *(f"ix:{int(s)}" for s in _PROBLEMS),
)
_REPLICA_KEYS: Final = ("hb", "stopped", "epoch", "t")
_Pending = tuple[tuple[Any, ...], "asyncio.Future[Any]"]


def cfg_args(cfg: Config) -> list[Any]:
    """The configuration as the lifecycle script reads it from ARGV[4..10]. The last one says
    both whether files are looked up in COS and the tail's quiet time: "0" without checks."""
    return [
        cfg.max_recording_seconds,
        cfg.upload_grace_seconds,
        cfg.reorder_window_seconds,
        cfg.retention_seconds,
        cfg.max_segments,
        cfg.max_apps,
        repr(float(cfg.tail_quiet_seconds)) if cfg.check_in_cos else "0",
    ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def hash_tagged(prefix: str) -> str:
    """The key prefix with a Redis Cluster hash tag, so that every key of the store hashes to
    one slot: a prefix that has one (``{recwatch}:``) is kept, otherwise its part before the
    trailing colons becomes the tag (``gme-recwatch:`` -> ``{gme-recwatch}:``)."""
    start = prefix.find("{")
    if start >= 0 and prefix.find("}", start + 1) > start + 1:
        return prefix
    base = prefix.rstrip(":") or "gme-recwatch"
    return "{" + base + "}" + prefix[len(prefix.rstrip(":")) :]


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


class RedisStore:
    """Lifecycle store in Redis, shared by every replica configured with the same prefix."""

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        cfg: Config,
        prefix: str = "gme-recwatch:",
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.client: Any = client  # redis-py types the two clients' commands apart
        self.cluster = isinstance(client, RedisCluster)
        self.prefix = hash_tagged(prefix)
        self.clock = clock  # None: Redis TIME, the clock every replica agrees on
        self._script = client.register_script(_SCRIPT)
        self._replicas = client.register_script(_REPLICAS)
        self._fixed_keys = [self.prefix + k for k in _FIXED_KEYS]
        self._replica_keys = [self.prefix + k for k in _REPLICA_KEYS]
        self._pending: list[_Pending] = []
        self._flights: set[asyncio.Task[None]] = set()  # kept so that they are not collected
        self._flying = 0  # flights not yet past their last look at _pending
        self._cfg_args = cfg_args(cfg)
        # Counters of what this replica did (see the module doc), by app label.
        self._stuck_total: dict[str, int] = {}
        self._missing_total: dict[str, int] = {}
        self._completed_total: dict[str, int] = {}
        self._orphan_events = {"completed": 0, "uploaded": 0}
        self._evictions: dict[tuple[str, str], int] = {
            (r, s): 0 for r in ("ttl", "capacity") for s in STATE_NAMES
        }
        self._app_overflow = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        cfg: Config,
        *,
        password: str | None = None,
        prefix: str = "gme-recwatch:",
        timeout: float = 1.0,
        clock: Clock | None = None,
    ) -> RedisStore:
        """A store on ``redis://``, ``rediss://`` (TLS) or ``unix://``, or on a Redis Cluster
        through any of its nodes with ``redis+cluster://`` or ``rediss+cluster://``. Every
        command times out after ``timeout`` seconds, so a slow or absent Redis becomes a quick
        503, never a hang."""
        if is_cluster_url(url):
            return cls(_cluster_client(url, password, timeout), cfg, prefix, clock)
        # One immediate retry on a fresh connection: after Redis restarts, every pooled
        # connection is stale, and the first command on each would fail for nothing. (A script
        # whose reply was lost and that runs again sees its event as a duplicate.)
        # At most MAX_CONNECTIONS to Redis; a callback beyond them waits for one, within the
        # same timeout, instead of opening connections without bound.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            password=password or None,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
            max_connections=MAX_CONNECTIONS,
            timeout=timeout,
            decode_responses=False,
        )
        return cls(aioredis.Redis(connection_pool=pool), cfg, prefix, clock)

    async def _run(self, op: str, *args: Any, segments: Sequence[str] = ()) -> Any:
        now = "" if self.clock is None else repr(self.clock.time())
        keys = self._fixed_keys + [self.prefix + "s:" + k for k in segments]
        try:
            return await self._script(keys=keys, args=[op, self.prefix, now, *self._cfg_args, *args])
        except _FAILURES as exc:
            # Only a connection never made surely sent nothing; after a timeout or a connection
            # lost mid-call, Redis may have run (or still run) the script.
            never_sent = isinstance(exc, RedisConnectionError) and "connecting" in str(exc)
            raise StoreUnavailable(f"{op}: {type(exc).__name__}", maybe_applied=not never_sent) from exc

    async def _run_replicas(self, op: str, *args: Any) -> Any:
        now = "" if self.clock is None else repr(self.clock.time())
        try:
            return await self._replicas(keys=self._replica_keys, args=[op, self.prefix, now, *args])
        except _FAILURES as exc:
            raise StoreUnavailable(f"{op}: {type(exc).__name__}") from exc

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except _FAILURES as exc:
            raise StoreUnavailable(f"ping: {type(exc).__name__}") from exc

    # ------------------------------------------------------------ the Store interface

    async def record(self, ev: Event) -> Outcome:
        bit = SEEN_BIT[ev.event_type]
        mode = RecordMode.of(ev.record_mode)
        args = (
            key_of(ev),
            bit,
            ev.timestamp,
            int(mode),
            str(ev.biz_id),
            ev.file_name if self.cfg.check_in_cos else "",
        )
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((args, done))
        # Counted, not len(self._flights): a flight that has just ended is still in the set until
        # its done-callback runs, which may be after this caller, whose callback would then wait
        # for the next callback to come (tests/test_stores_redis.py).
        if self._flying < RECORD_FLIGHTS:
            self._flying += 1
            flight = asyncio.create_task(self._fly())
            self._flights.add(flight)
            flight.add_done_callback(self._flights.discard)
        reply = await done
        result, label, mode_code, duration, upload_delay, entered, orphaned, evicted, overflow = reply
        app = label.decode()
        out = Outcome(
            _RESULTS[result],
            EVENT_LABEL[ev.event_type],
            MODE_NAMES[mode_code],
            app,
            None if duration is None else float(duration),
            None if upload_delay is None else float(upload_delay),
        )
        if out.result is not Result.DUPLICATE and bit == SEEN_COMPLETED:
            self._completed_total[app] = self._completed_total.get(app, 0) + 1
        self._app_overflow += overflow
        self._count(app, entered, orphaned, evicted, "capacity")
        return out

    async def _fly(self) -> None:
        """Write what is pending, RECORD_BATCH callbacks per script call, until nothing is:
        each callback gets its own reply, and a failed call fails each of its callbacks."""
        try:
            await self._fly_batches()
        finally:
            self._flying -= 1  # in the same step as the last look at _pending: nothing between

    async def _fly_batches(self) -> None:
        while self._pending:
            batch = self._pending[:RECORD_BATCH]
            del self._pending[:RECORD_BATCH]
            try:
                replies = await self._run(
                    "records",
                    len(batch),
                    *(a for args, _ in batch for a in args),
                    segments=[a[0] for a, _ in batch],
                )
            except StoreUnavailable as exc:
                for _, done in batch:
                    if not done.done():  # each its own error: a 503 each, and Tencent retries each
                        done.set_exception(StoreUnavailable(str(exc), maybe_applied=exc.maybe_applied))
                continue
            except BaseException:  # cancelled at shutdown: no callback is left waiting
                for _, done in batch + self._pending:
                    if not done.done():
                        done.set_exception(StoreUnavailable("record: shutting down"))
                self._pending.clear()
                raise
            for (_, done), reply in zip(batch, replies, strict=True):
                if not done.done():  # its caller may have gone (a client that hung up)
                    done.set_result(reply)

    def _count(
        self, app: str, entered: int, orphaned: bytes | str, evicted: int | list[int], reason: str
    ) -> None:
        if entered == State.STUCK:
            self._stuck_total[app] = self._stuck_total.get(app, 0) + 1
        elif entered == State.UPLOAD_MISSING:
            self._missing_total[app] = self._missing_total.get(app, 0) + 1
        if orphaned:
            self._orphan_events[orphaned.decode() if isinstance(orphaned, bytes) else orphaned] += 1
        for state in evicted if isinstance(evicted, list) else (evicted,):
            if state >= 0:
                self._evictions[(reason, STATE_NAMES[state])] += 1

    async def sweep(self, budget: int) -> Sweep:
        # A script holds Redis while it runs: rounds of SWEEP_BATCH keep every replica's
        # callbacks moving while a flood of deadlines is applied.
        changed, more = await self._run("sweep", min(budget, SWEEP_BATCH))
        done = Sweep(more=more > 0)
        for raw_key, entered, orphaned, evicted, label, window in changed:
            key, app = raw_key.decode(), label.decode()
            self._count(app, entered, orphaned, evicted, "ttl")
            if entered >= 0:
                biz, room, user, task, seq = split_key(key)
                done.transitions.append(
                    Transition(
                        STATE_NAMES[entered], biz, room, user, task, seq, app, blind_window=_window(window)
                    )
                )
        return done

    async def claim(self, limit: int, lease: float) -> list[Claim]:
        # Atomic in the script: with several replicas, each segment is claimed by one of them.
        claimed = await self._run("claim", limit, lease)
        return [
            Claim(_text(key), STATE_NAMES[pending], _text(file), _text(label), int(anchor), int(mode))
            for key, pending, file, label, anchor, mode in claimed
        ]

    async def claim_tails(self, limit: int, lease: float) -> list[TailClaim]:
        claimed = await self._run("tails", limit, lease)
        return [
            TailClaim(_text(stream), int(mode), int(nxt), _text(file), int(anchor), _text(label))
            for stream, mode, nxt, file, anchor, label in claimed
        ]

    async def adopt(
        self, stream: str, files: list[tuple[int, str]], retry_in: float | None = None
    ) -> list[Reconciled]:
        if retry_in is not None:
            await self._run("adopt", stream, repr(retry_in))
            return []
        reply = await self._run("adopt", stream, "", *(x for seq, name in sorted(files) for x in (seq, name)))
        if not reply:
            return []
        made, evicted, label = reply
        self._count("", -1, "", list(evicted), "capacity")
        biz, room, user, task = split_key(stream + SEP + "0")[:4]
        return [
            Reconciled(biz, room, user, task, int(seq), _text(label), tuple(events_seen(lost)))
            for seq, lost in made
        ]

    async def resolve(self, key: str, answer: CheckAnswer, backoff: Backoff | None = None) -> Resolution:
        retry_args = ("", "", "") if backoff is None else backoff
        reply = await self._run("resolve", key, answer, *retry_args, segments=[key])
        if reply[0] == -2:
            return None
        entered, lost, check, orphaned, label, retry, confirmed = reply
        app = _text(label)
        retry_in = float(retry)
        self._count(app, entered, orphaned, -1, "ttl")
        biz, room, user, task, seq = split_key(key)
        if answer == "found":
            return Reconciled(biz, room, user, task, seq, app, tuple(events_seen(lost)))
        if confirmed >= 0:  # an unconfirmed problem, confirmed now (counted in its state once)
            return Transition(STATE_NAMES[confirmed], biz, room, user, task, seq, app, True)
        if entered < 0:
            return Retrying(key, retry_in) if retry_in >= 0 else None
        return Transition(
            STATE_NAMES[entered],
            biz,
            room,
            user,
            task,
            seq,
            app,
            Check(check).confirmed,
            retry_in=retry_in if retry_in >= 0 else None,
        )

    # ------------------------------------------------------------ the SharedStore interface

    async def heartbeat(self, replica: str) -> None:
        await self._run_replicas("beat", replica)

    async def last_alive(self) -> tuple[float | None, float | None, float]:
        newest, stopped, now = await self._run_replicas("alive")
        return (float(newest) if newest else None, float(stopped) if stopped else None, float(now))

    async def leave(self, replica: str, period: float) -> None:
        await self._run_replicas("leave", replica, period)

    async def epoch(self, known: str) -> Epoch:
        status, marker, segments, now = await self._run_replicas("epoch", known, uuid.uuid4().hex)
        return Epoch(cast(EpochStatus, _text(status)), _text(marker), int(segments), float(now))

    async def check_online(self) -> str:
        try:
            if self.cluster:  # the node that holds the store's slot
                await self.client.initialize()  # the slot map, before it is looked up
                node = self.client.get_node_from_key(self.prefix + "t")
                info = await self.client.info("server", target_nodes=node)
                state = _text((await self.client.cluster_info(target_nodes=node)).get("cluster_state", b""))
                if state != "ok":
                    raise StoreUnavailable(f"cluster_state is {state!r} on {node.name}")
            else:
                info = await self.client.info("server")
            version = _text(info.get("valkey_version") or info.get("redis_version") or "0")
            name = "Valkey" if info.get("valkey_version") else "Redis"
            compatible = _text(info.get("redis_version") or version)
            if int(compatible.split(".")[0]) < MIN_VERSION:
                raise StoreUnavailable(f"{name} {version}: version {MIN_VERSION} or later is needed")
            at = {"target_nodes": self.client.get_node_from_key(self.prefix + "t")} if self.cluster else {}
            policy = _text((await self.client.info("memory", **at)).get("maxmemory_policy", "noeviction"))
            if policy not in SAFE_POLICIES:
                raise StoreUnavailable(
                    f"maxmemory-policy {policy} evicts keys when Redis is full, segments included, "
                    "and nobody hears of it: set maxmemory-policy noeviction (a full Redis then refuses "
                    "writes: callbacks are answered 503, Tencent retries, GmeRecwatchBackendDown pages)"
                )
            aof = int((await self.client.info("persistence", **at)).get("aof_enabled", 0) or 0)
            for script in (_SCRIPT, _REPLICAS):
                await self.client.script_load(script)
            segments = int(await self.client.hget(self.prefix + "t", "n") or 0)
            marked = await self.client.exists(self.prefix + "epoch")
        except AuthenticationError as exc:
            raise StoreUnavailable(
                f"authentication failed ({exc}): check GME_RECWATCH_REDIS_PASSWORD_FILE"
            ) from exc
        except ResponseError as exc:  # NOAUTH, a script Redis will not load, a denied command
            raise StoreUnavailable(f"refused: {exc}") from exc
        except _FAILURES as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        where = f"cluster slot {self.client.keyslot(self.prefix + 't')}, " if self.cluster else ""
        described = f"{name} {version}, {where}prefix {self.prefix!r}, {segments} segments, " + (
            "epoch marker set" if marked else "never used (no epoch marker yet)"
        )
        if not aof:  # a warning, on a line of its own: an RDB-only Redis may be what was chosen
            described += (
                "\nwarning: AOF is off (appendonly no): a Redis restart keeps at most its last RDB "
                "snapshot, if any, and the segments since are lost (GmeRecwatchStoreReset); "
                "set appendonly yes"
            )
        return described

    async def mark_blind(self, start: float, end: float) -> int:
        # In pages of the order of first receipt, each one script: Redis is never held for
        # long, and a segment's place in that order never changes, so none is passed over or
        # seen twice while callbacks and sweeps go on; those heard from since the window ended
        # are not marked (lifecycle.blind_marks), as a callback would have cleared the mark.
        marked, after, upto = 0, "0", ""
        while True:
            n, seen, last, upto_raw = await self._run("blind", repr(start), repr(end), after, _SCAN_BATCH, upto)
            marked += n
            after, upto = _text(last), _text(upto_raw)
            if seen < _SCAN_BATCH:
                return int(marked)

    async def mark_segment(self, key: str, start: float, end: float) -> bool:
        return bool(await self._run("mark", key, repr(start), repr(end)))

    async def register_apps(self, biz_ids: list[int], without_start: frozenset[int] = frozenset()) -> None:
        # An app past MAX_APPS is "other", and counted as overflow, as the in-memory store does.
        self._app_overflow += int(await self._run("apps", *(str(b) for b in biz_ids)))
        await self._run("nostart", *(str(b) for b in sorted(without_start)))

    async def count(self) -> int:
        try:
            return int(await self.client.hget(self.prefix + "t", "n") or 0)
        except _FAILURES as exc:
            raise StoreUnavailable(f"count: {type(exc).__name__}") from exc

    async def stats(self) -> StoreStats:
        p = self.prefix
        try:
            # One slot: a transaction on a cluster too (redis-py sends it to the slot's node).
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hgetall(p + "t")
                pipe.lrange(p + "applist", 0, -1)
                tallies, labels_raw = await pipe.execute()
                labels = [x.decode() for x in labels_raw]
                for idx in range(len(labels)):
                    pipe.zrange(p + f"ss:{idx}", 0, 0, withscores=True)
                oldest = await pipe.execute() if labels else []
            # The evictions of the node that holds the store (an INFO has no key to route by).
            at = {"target_nodes": self.client.get_node_from_key(p + "t")} if self.cluster else {}
            info = await self.client.info("stats", **at)
        except _FAILURES as exc:
            raise StoreUnavailable(f"stats: {type(exc).__name__}") from exc
        t = {k.decode(): int(v) for k, v in tallies.items()}

        def per_app(field: str) -> dict[str, int]:
            return {label: t.get(f"{field}:{i}", 0) for i, label in enumerate(labels)}

        return StoreStats(
            app_labels=labels,
            active_recordings={
                (label, MODE_NAMES[m]): t.get(f"a:{i}:{m}", 0)
                for i, label in enumerate(labels)
                for m in range(len(MODE_NAMES))
            },
            active_rooms=per_app("r"),
            stuck=per_app("s"),
            stuck_total={a: self._stuck_total.get(a, 0) for a in labels},
            missing_uploads=per_app("m"),
            missing_uploads_total={a: self._missing_total.get(a, 0) for a in labels},
            completed_total={a: self._completed_total.get(a, 0) for a in labels},
            oldest_start={
                label: (float(o[0][1]) if o else 0.0) for label, o in zip(labels, oldest, strict=True)
            },
            orphan_events=dict(self._orphan_events),
            by_state={name: t.get(f"st:{i}", 0) for i, name in enumerate(STATE_NAMES)},
            evictions=dict(self._evictions),
            capacity=self.cfg.max_segments,
            app_overflow=self._app_overflow,
            segments=t.get("n", 0),
            # Held for a lookup (the script's `pend`); `chk` also holds the lookups to retry.
            checks_pending=t.get("pend", 0),
            segments_vanished=t.get("vanished", 0),
            evicted_keys=int(info.get("evicted_keys", 0)),
        )

    async def segments(
        self,
        *,
        state: str | None = None,
        app_id: str | None = None,
        room_id: str | None = None,
        limit: int = 100,
    ) -> list[SegmentView]:
        return (await self.page(state=state, app_id=app_id, room_id=room_id, limit=limit)).segments

    async def page(
        self,
        *,
        state: str | None = None,
        app_id: str | None = None,
        room_id: str | None = None,
        limit: int = 100,
        after: tuple[float, str] | None = None,
    ) -> SegmentPage:
        """Matching segments, oldest first. Problem states come from their index; any other
        query scans (SCAN, never KEYS), narrowed to one room when a room is given."""
        p = self.prefix
        now = time.time() if self.clock is None else self.clock.time()  # Redis TIME's, near enough
        try:
            labels = [_text(x) for x in await self.client.lrange(p + "applist", 0, -1)]
            if state is not None and state in {s.label for s in _PROBLEMS}:
                code = STATE_NAMES.index(state)
                keys = [_text(k) for k in await self.client.zrange(f"{p}ix:{code}", 0, -1)]
            else:
                pattern = p + "s:"
                if app_id is not None and app_id.isdigit() and room_id is not None:
                    pattern += _glob_escape(f"{app_id}{SEP}{room_id}{SEP}")
                keys = [
                    _text(k)[len(p) + 2 :]
                    async for k in self.client.scan_iter(match=pattern + "*", count=_SCAN_BATCH)
                ]
            views: list[tuple[float, str, tuple[Any, ...]]] = []
            for start in range(0, len(keys), _SCAN_BATCH):
                batch = keys[start : start + _SCAN_BATCH]
                for key, raw in zip(batch, await self.client.mget([p + "s:" + k for k in batch]), strict=True):
                    if raw is None:
                        continue
                    # The packed fields, then the FileName (not shown).
                    seg = _FORMAT.unpack_from(raw if isinstance(raw, bytes) else raw.encode("latin-1"))
                    label = labels[seg[4]] if seg[4] < len(labels) else "other"
                    if state is not None and STATE_NAMES[seg[1]] != state:
                        continue
                    if app_id is not None and label != app_id and not key.startswith(app_id + SEP):
                        continue
                    if room_id is not None and key.split(SEP, 2)[1] != room_id:
                        continue
                    views.append((seg[8], key, (*seg, label)))
            chosen, total, nxt = page_of(views, limit, after)
            keys = [k for _, k, _ in chosen]
            due = await self._deadlines(keys)
            windows = dict(zip(keys, await self.client.hmget(p + "bw", keys), strict=True)) if keys else {}
            starts = dict(zip(keys, await self.client.hmget(p + "sb", keys), strict=True)) if keys else {}
            notes = (
                dict(zip(keys, await self.client.mget([p + "ck:" + k for k in keys]), strict=True))
                if keys
                else {}
            )
        except _FAILURES as exc:
            raise StoreUnavailable(f"segments: {type(exc).__name__}") from exc
        return SegmentPage(
            [
                _view(
                    k,
                    seg,
                    due.get(k),
                    self.cfg,
                    _window(windows.get(k)),
                    _note(notes.get(k)),
                    _window(starts.get(k)),
                    now,
                )
                for _, k, seg in chosen
            ],
            total,
            nxt,
        )

    async def note_check(self, key: str, note: CheckNote) -> None:
        # Its own key, beside the segment's (the packed segment and the script stay as they
        # are), expiring with the retention: it never outlives the segment by more than that.
        try:
            await self.client.set(
                self.prefix + "ck:" + key,
                msgspec.json.encode(note),
                ex=max(1, math.ceil(self.cfg.retention_seconds)),
            )
        except _FAILURES as exc:
            raise StoreUnavailable(f"note_check: {type(exc).__name__}") from exc

    async def _deadlines(self, keys: list[str]) -> dict[str, float | None]:
        if not keys:
            return {}
        scores = await self.client.zmscore(self.prefix + "due", keys)
        return dict(zip(keys, scores, strict=True))

    async def close(self) -> None:
        await self.client.aclose()
        if not self.cluster:
            await self.client.connection_pool.disconnect()


def _cluster_client(url: str, password: str | None, timeout: float) -> RedisCluster:
    """redis-py's cluster client on ``redis+cluster://`` (``rediss+cluster://`` for TLS): it
    learns the slots from the node in the URL, follows MOVED and ASK, and after a failover
    learns the new master. At most MAX_CONNECTIONS to each node."""
    return RedisCluster.from_url(
        url.replace("+cluster", "", 1),
        password=password or None,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10,
        # While a master fails over, its slots have no answer for a moment: a few quick retries,
        # each after the cluster client looks the slots up again, then a 503 that Tencent retries.
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 3),
        max_connections=MAX_CONNECTIONS,
        decode_responses=False,
    )


def _window(raw: bytes | str | None) -> tuple[float, float] | None:
    """A blind window as the script keeps it ("<start> <end>"); None for none."""
    if not raw:
        return None
    start, end = _text(raw).split()
    return float(start), float(end)


def _note(raw: bytes | str | None) -> CheckNote | None:
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw, type=CheckNote)
    except msgspec.DecodeError:  # written by another version: show nothing rather than fail
        return None


def _view(
    key: str,
    seg: tuple[Any, ...],
    deadline: float | None,
    cfg: Config,
    window: tuple[float, float] | None = None,
    note: CheckNote | None = None,
    start_window: tuple[float, float] | None = None,
    now: float = INF,
) -> SegmentView:
    seen, state, mode, flags, _app, ts_s, ts_c, ts_u, r_first, r_complete, expires, label = seg
    biz, room, user, task, seq = split_key(key)
    lost = (flags >> _FLAG_LOST_SHIFT) & (SEEN_COMPLETED | SEEN_UPLOADED)
    if flags & _FLAG_LOST_START:
        lost |= SEEN_STARTED
    confirmed = Check((flags >> _FLAG_CHECK_SHIFT) & 3).confirmed
    note = note if confirmed is not None or lost else None  # only while its answer stands
    passed = deadline_passed(State(state), seen, r_first, r_complete, cfg, start_window is not None, now)
    window = window or (start_window if not seen & SEEN_STARTED else None)
    return SegmentView(
        biz_id=biz,
        room_id=room,
        user_id=user,
        task_id=task,
        seq_no=seq,
        app_id=label,
        state=STATE_NAMES[state],
        record_mode=MODE_NAMES[mode],
        events_seen=events_seen(seen & ~lost),
        started_at=ts_s if seen & SEEN_STARTED and not lost & SEEN_STARTED else None,
        completed_at=ts_c if seen & SEEN_COMPLETED and not lost & SEEN_COMPLETED else None,
        uploaded_at=ts_u if seen & SEEN_UPLOADED and not lost & SEEN_UPLOADED else None,
        first_received_at=r_first,
        next_deadline_at=deadline,
        expires_at=expires,
        confirmed=confirmed,
        lost_events=events_seen(lost),
        blind_window_start=window[0] if window else None,
        blind_window_end=window[1] if window else None,
        deadline=passed[0] if passed else None,
        state_since=(
            note.checked_at if note is not None and passed is not None else passed[1] if passed else None
        ),
        check=note,
    )
