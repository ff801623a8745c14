"""`gme-recwatch serve` replicas on a real Redis Cluster of three masters, each with a replica
(`redis+cluster://`): one truth, as on one Redis; a master failing over under traffic and the
store's slot migrating under traffic (ASK, then MOVED) lose no acknowledged callback."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import httpx
import redis as redis_sync
from conftest import RedisClusterServers, RedisServer

from gme_recwatch.settings import Settings
from gme_recwatch.stores.redis import RedisStore, hash_tagged

from .conftest import RunningService
from .test_replicas import shared_view, spread_run, wait_for
from .test_simulator import DEADLINES, expected_metrics

CFG = Settings().lifecycle()


def cluster_env(cluster: RedisClusterServers, **extra: str) -> dict[str, str]:
    return {
        **DEADLINES,
        "GME_RECWATCH_REDIS_URL": cluster.url,
        "GME_RECWATCH_REDIS_PREFIX": f"cl-{uuid.uuid4().hex[:8]}:",
        "GME_RECWATCH_REDIS_TIMEOUT_SECONDS": "1",
        **extra,
    }


def slot_of(cluster: RedisClusterServers, env: dict[str, str]) -> int:
    return cluster.keyslot(hash_tagged(env["GME_RECWATCH_REDIS_PREFIX"]) + "t")


def keys_by_node(cluster: RedisClusterServers, env: dict[str, str]) -> dict[int, list[str]]:
    """The store's keys on each node that holds any, by port (replicas included)."""
    pattern = hash_tagged(env["GME_RECWATCH_REDIS_PREFIX"]) + "*"
    out = {}
    for node in cluster.nodes:
        c = cluster.client(node)
        try:
            keys = list(c.scan_iter(match=pattern, count=1000))
        finally:
            c.close()
        if keys:
            out[node.port] = keys
    return out


def test_three_replicas_on_a_redis_cluster_count_what_a_single_process_would_in_one_slot(
    service_factory: object, redis_cluster: RedisClusterServers
) -> None:
    env = cluster_env(redis_cluster)
    replicas: list[RunningService] = [service_factory(**env) for _ in range(3)]  # type: ignore[operator]
    summary = spread_run(replicas)
    assert summary.transport_errors == summary.timeouts == 0
    assert all(c.undelivered == 0 for c in summary.events.values())
    want = expected_metrics(summary)
    got = wait_for(want, replicas, list(want))
    assert got == want
    # Every key in the one slot of the prefix's hash tag: on its master (and its replica) only.
    slot = slot_of(redis_cluster, env)
    master, standby = redis_cluster.master_of(slot)
    where = keys_by_node(redis_cluster, env)
    assert set(where) <= {master.port, *(r.port for r in standby)} and master.port in where
    assert {redis_cluster.keyslot(k) for k in where[master.port]} == {slot}
    assert len(where[master.port]) > want["tracked recording"]  # the segments and the books
    for r in replicas:
        assert "internal_error" not in r.logs()


def test_a_master_failing_over_under_traffic_loses_no_acknowledged_callback(
    service_factory: object, redis_cluster: RedisClusterServers
) -> None:
    env = cluster_env(redis_cluster)
    replicas: list[RunningService] = [service_factory(**env) for _ in range(2)]  # type: ignore[operator]
    slot = slot_of(redis_cluster, env)
    _, (standby, *_) = redis_cluster.master_of(slot)

    def failover() -> None:  # what an operator or TencentDB does for maintenance
        c = redis_cluster.client(standby)
        try:
            c.execute_command("CLUSTER", "FAILOVER")
        finally:
            c.close()

    promote = threading.Timer(0.8, failover)
    promote.start()
    # As Tencent does: whatever was answered 503 while the slot moved is retried.
    summary = spread_run(replicas, retry_seconds=60)
    promote.join()
    assert redis_cluster.master_of(slot)[0] is standby  # the replica really took over mid-run
    assert all(c.undelivered == 0 for c in summary.events.values())
    want = expected_metrics(summary)
    tracked = [k for k in want if k.startswith("tracked")]
    got = wait_for(want, replicas, tracked)
    # The new master holds every event that was acknowledged, whichever master took it.
    assert {k: got[k] for k in tracked} == {k: want[k] for k in tracked}


def _migrate(cluster: RedisClusterServers, slot: int, source: RedisServer, target: RedisServer) -> None:
    """Every key of `slot` from `source` to `target`, as `redis-cli --cluster reshard` does."""
    src, dst = cluster.client(source), cluster.client(target)
    try:
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100000):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
    finally:
        src.close()
        dst.close()


def _setslot(cluster: RedisClusterServers, node: RedisServer, *args: object) -> None:
    c = cluster.client(node)
    try:
        c.execute_command("CLUSTER", "SETSLOT", *args)
    finally:
        c.close()


def _asking_hget(node: RedisServer, key: str, field: str) -> int:
    """A field read on the node importing its slot (ASKING first, on the same connection)."""
    c = redis_sync.Redis(port=node.port, single_connection_client=True)
    try:
        c.execute_command("ASKING")
        return int(c.hget(key, field) or 0)
    finally:
        c.close()


def _count_in_slot(cluster: RedisClusterServers, node: RedisServer, slot: int) -> int:
    c = cluster.client(node)
    try:
        return int(c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))
    finally:
        c.close()


def test_the_store_slot_migrating_under_traffic_is_followed_through_ask_and_moved(
    service_factory: object, redis_cluster: RedisClusterServers
) -> None:
    """While the slot's keys are on the target but the source still owns it, the source answers
    ASK: a read is followed there; a script whose keys are not all there yet is refused by Redis
    before it writes anything (TRYAGAIN), so its callback is answered 503 and retried. Once the
    slot is the target's, the stale slot map meets MOVED and is corrected."""
    env = cluster_env(redis_cluster, GME_RECWATCH_MAX_RECORDING_SECONDS="3600")
    svc: RunningService = service_factory(**env)  # type: ignore[operator]
    slot = slot_of(redis_cluster, env)
    source, _ = redis_cluster.master_of(slot)
    target = next(m for m in redis_cluster.masters() if m is not source)
    source_id, target_id = redis_cluster.node_id(source), redis_cluster.node_id(target)
    for i in range(5):
        assert svc.send(1, room=f"before-{i}").status_code == 200

    acked: list[str] = []
    stop = threading.Event()

    def traffic() -> None:  # one callback after another while the slot moves
        i = 0
        while not stop.is_set():
            room = f"bg-{i}"
            if svc.send(1, room=room).status_code == 200:
                acked.append(room)
            i += 1

    async def count_through_the_store() -> int:
        store = RedisStore.from_url(redis_cluster.url, CFG, prefix=env["GME_RECWATCH_REDIS_PREFIX"])
        try:
            return await store.count()
        finally:
            await store.close()

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(0.3)
        _setslot(redis_cluster, target, slot, "IMPORTING", source_id)
        _setslot(redis_cluster, source, slot, "MIGRATING", target_id)
        time.sleep(0.3)
        _migrate(redis_cluster, slot, source, target)
        assert _count_in_slot(redis_cluster, source, slot) == 0
        assert redis_cluster.master_of(slot)[0] is source  # still the owner: it answers ASK
        in_target = _asking_hget(target, hash_tagged(env["GME_RECWATCH_REDIS_PREFIX"]) + "t", "n")
        assert asyncio.run(count_through_the_store()) == in_target >= 5  # ASK followed
        during = {f"ask-{i}": svc.send(1, room=f"ask-{i}").status_code for i in range(3)}
        assert set(during.values()) <= {200, 503}  # never a 500, never a 200 not stored
        time.sleep(0.3)
        for node in redis_cluster.masters():
            _setslot(redis_cluster, node, slot, "NODE", target_id)
        # The service's slot map still names the source: it answers MOVED.
        for i in range(3):
            assert svc.send(1, room=f"moved-{i}").status_code == 200
            assert svc.send(2, room=f"before-{i}").status_code == 200  # a segment that moved
        for room, status in during.items():  # as Tencent retries what was answered 503
            if status != 200:
                assert svc.send(1, room=room).status_code == 200
        time.sleep(0.3)
    finally:
        stop.set()
        sender.join()
    assert redis_cluster.master_of(slot)[0] is target
    assert _count_in_slot(redis_cluster, source, slot) == 0 and _count_in_slot(redis_cluster, target, slot) > 0
    segments = httpx.get(svc.admin_url + "/api/v1/segments?limit=1000", timeout=10).json()["segments"]
    rooms = {s["room_id"]: s for s in segments}
    assert len(rooms) < 1000  # the whole store in one page
    want = {f"before-{i}" for i in range(5)} | {f"{w}-{i}" for w in ("ask", "moved") for i in range(3)}
    assert want | set(acked) <= set(rooms)  # every acknowledged callback is in the store
    assert len(acked) > 10  # traffic really flowed through the migration
    assert all(rooms[f"before-{i}"]["state"] == "completed" for i in range(3))
    got = shared_view([svc])
    assert got["tracked recording"] + got["tracked completed"] == len(rooms)
    assert "internal_error" not in svc.logs()
