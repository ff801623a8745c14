-- What the replicas sharing one Redis store know of each other and of the store itself: their
-- heartbeats (blind.after_all_down) and the store's epoch marker (a reset of the store). Apart
-- from redis_lifecycle.lua because none of it is a lifecycle rule: it never touches a segment.
--
-- ARGV: op, prefix, now (or "" for Redis TIME: the one clock every replica agrees on), then the
--       op's own arguments.
--
-- Keys (under the prefix):
--   hb       zset: replica id -> its last heartbeat
--   stopped  when the last replica alive stopped cleanly
--   epoch    the store's marker, "<id> <created> <previous id or ->": set once when a store is
--            first used, and again when it is found missing. Nothing else ever deletes it, so
--            its absence means the data went with it (a restart without persistence, a failover
--            to an empty replica, FLUSHALL).
--   t        (read only) the lifecycle script's tallies: "n" is the segments tracked

local op, P = ARGV[1], ARGV[2]
local now
if ARGV[3] == "" then
  local t = redis.call("TIME")
  now = tonumber(t[1]) + tonumber(t[2]) / 1e6
else
  now = tonumber(ARGV[3])
end
local function stamp(t) return string.format("%.6f", t) end

if op == "beat" then
  -- replica id: its heartbeat now; heartbeats of replicas gone a day are dropped.
  redis.call("ZADD", P .. "hb", now, ARGV[4])
  redis.call("ZREMRANGEBYSCORE", P .. "hb", "-inf", now - 86400)
  return stamp(now)
end

if op == "alive" then
  -- The newest heartbeat, the last clean stop (or ""), and now, as strings.
  local newest = redis.call("ZRANGE", P .. "hb", -1, -1, "WITHSCORES")[2] or ""
  return {newest, redis.call("GET", P .. "stopped") or "", stamp(now)}
end

if op == "leave" then
  -- replica id, heartbeat period: a clean stop; the last replica alive notes when it stopped.
  redis.call("ZREM", P .. "hb", ARGV[4])
  local newest = tonumber(redis.call("ZRANGE", P .. "hb", -1, -1, "WITHSCORES")[2] or "-1")
  if newest < now - 2 * tonumber(ARGV[5]) then
    redis.call("SET", P .. "stopped", stamp(now))
  end
  return 1
end

if op == "epoch" then
  -- known marker id ("" for none yet), a fresh id: how the marker compares with what the
  -- caller knew, as {status, marker id, segments tracked, now}. Atomic, so exactly one replica
  -- reports each reset ("reset"): the one that finds the marker gone, and sets the fresh one
  -- naming the marker it knew as its previous; or, when a replica that knew nothing set it
  -- meanwhile (previous "-"), the first one that knew the old marker, which names it there.
  -- Every other replica then finds a marker that is not the one it knew ("changed") and takes
  -- it over without counting. A marker is only ever replaced when missing, and its previous id
  -- only ever filled in once: no two replicas can take turns resetting it.
  local known, fresh = ARGV[4], ARGV[5]
  local n = tonumber(redis.call("HGET", P .. "t", "n") or "0")
  local raw = redis.call("GET", P .. "epoch")
  if not raw then
    redis.call("SET", P .. "epoch", fresh .. " " .. stamp(now) .. " " .. (known == "" and "-" or known))
    return {known == "" and "created" or "reset", fresh, n, stamp(now)}
  end
  local id, created, previous = string.match(raw, "^(%S+) (%S+) (%S+)$")
  if id == known then return {"same", id, n, stamp(now)} end
  if known == "" then return {"adopted", id, n, stamp(now)} end
  if previous == "-" then
    redis.call("SET", P .. "epoch", id .. " " .. created .. " " .. known)
    return {"reset", id, n, stamp(now)}
  end
  return {"changed", id, n, stamp(now)}
end

return redis.error_reply("unknown op " .. tostring(op))
