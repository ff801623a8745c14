-- The lifecycle rules of gme_recwatch/lifecycle.py, for the Redis store, run atomically inside
-- Redis so that any number of replicas share one truth and every deadline fires exactly once.
-- tests/test_stores.py runs the same conformance suite against this script and the in-memory
-- store: it is what proves the two agree.
--
-- ARGV: op, prefix, now (or "" for Redis TIME: the one clock every replica agrees on),
--       max_recording, upload_grace, reorder_window, retention, max_segments, max_apps,
--       check_in_cos (1 or 0), then the op's own arguments.
--
-- Keys (under the prefix):
--   s:<segment key>   the segment, packed (see pack/unpack); expires shortly after retention
--   due               zset: segment key -> when the sweep must next look at it
--   upl               zset: uploaded segments -> when they became uploaded (evicted first)
--   ix:<state>        zset: segments in a problem state -> first receive time (for the API)
--   t                 hash: the shared gauges (n, st:<state>, a:<app>:<mode>, r:<app>,
--                     s:<app>, m:<app>)
--   rooms             hash: room -> its segments recording
--   sc:<app>, ss:<app> per app: recording starts per second (hash) and those seconds (zset)
--   apps, applist     BizID -> label index; the labels in order ("other" once max_apps is hit)
--   chk               zset: segments whose COS check is pending -> when they may be claimed
--                     (first receive time; once claimed, when the claim's lease runs out)
--   bw                hash: segments marked by a blind window -> "<start> <end>" (Unix times)
--   hb                zset: replica id -> its last heartbeat; stopped: when the last replica
--                     alive stopped cleanly (blind.after_all_down)

local op, P = ARGV[1], ARGV[2]
local now
if ARGV[3] == "" then
  local t = redis.call("TIME")
  now = tonumber(t[1]) + tonumber(t[2]) / 1e6
else
  now = tonumber(ARGV[3])
end
local MAX_REC, GRACE, WINDOW, RETENTION = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local MAX_SEGMENTS, MAX_APPS = tonumber(ARGV[8]), tonumber(ARGV[9])
local CHECK_IN_COS = ARGV[10] == "1"

local INF = math.huge
local S, C, U = 1, 2, 4
local RECORDING, COMPLETED, UPLOADED, STUCK, UPLOAD_MISSING, ORPHAN, UNVERIFIED = 0, 1, 2, 3, 4, 5, 6
-- lifecycle.BLIND_MARKED
local BLIND_MARKED = {[RECORDING] = true, [COMPLETED] = true}
local PROBLEM = {[STUCK] = true, [UPLOAD_MISSING] = true, [ORPHAN] = true}
local LIVE = {[RECORDING] = true, [STUCK] = true}
-- seg.flags: bit 0 the start-lost mark, bits 1-2 the COS check (lifecycle.Check), bits 3-4
-- the events found lost (the `seen` bits of completed and uploaded, shifted by 2).
local START_LOST = 1
local CHECK_NONE, CHECK_PENDING, CHECK_CONFIRMED, CHECK_UNCONFIRMED = 0, 1, 2, 3
local CHECKED = {[STUCK] = true, [UPLOAD_MISSING] = true}
-- Results, in the order of lifecycle.Result.
local ACCEPTED, DUPLICATE, OUT_OF_ORDER, LATE = 0, 1, 2, 3
local SEP = "\0"
-- A segment's key lives this much past its retention: the sweep normally removes it first.
local KEY_GRACE = 3600

local band, bor, bnot, lshift, rshift = bit.band, bit.bor, bit.bnot, bit.lshift, bit.rshift

local function has(seen, b) return band(seen, b) ~= 0 end

-- lifecycle.derive_state
local function derive(seen, r_first, r_complete)
  if has(seen, S) then
    if has(seen, U) then return UPLOADED, INF end
    if not has(seen, C) then
      local d = r_first + MAX_REC
      if now >= d then return STUCK, INF end
      return RECORDING, d
    end
    local d = r_complete + GRACE
    if now >= d then return UPLOAD_MISSING, INF end
    return COMPLETED, d
  end
  local window = r_first + WINDOW
  if now < window then
    if has(seen, U) then return UPLOADED, window end
    return COMPLETED, math.min(window, r_complete + GRACE)
  end
  if has(seen, U) then return ORPHAN, INF end
  local d = r_complete + GRACE
  if now >= d then return UPLOAD_MISSING, INF end
  return ORPHAN, d
end

-- lifecycle.classify
local function classify(seen, b, state)
  if has(seen, b) then return DUPLICATE end
  if state ~= nil and (PROBLEM[state] or state == UNVERIFIED) then return LATE end
  if seen > b then return OUT_OF_ORDER end
  return ACCEPTED
end

-- lifecycle.holds_for_check
local function holds(old, new, check)
  return CHECK_IN_COS and old ~= nil and CHECKED[new] and new ~= old
    and (check == CHECK_NONE or check == CHECK_PENDING)
end

local FORMAT = "<BbBBHdddddd"

-- The packed fields, then the FileName (kept with COS checks on; empty otherwise).
local function unpack(raw)
  local seen, state, mode, flags, app, ts_s, ts_c, ts_u, r_first, r_complete, expires, pos =
    struct.unpack(FORMAT, raw)
  return {seen = seen, state = state, mode = mode, flags = flags, app = app, ts_s = ts_s,
          ts_c = ts_c, ts_u = ts_u, r_first = r_first, r_complete = r_complete, expires = expires,
          file = string.sub(raw, pos)}
end

local function save(key, seg)
  redis.call("SET", P .. "s:" .. key,
    struct.pack(FORMAT, seg.seen, seg.state, seg.mode, seg.flags, seg.app, seg.ts_s, seg.ts_c,
      seg.ts_u, seg.r_first, seg.r_complete, seg.expires) .. seg.file,
    "PX", math.max(1, math.floor((seg.expires + KEY_GRACE - now) * 1000)))
end

local function check_of(seg) return rshift(band(seg.flags, 6), 1) end

local function set_check(key, seg, check)
  local old = check_of(seg)
  if old == check then return end
  seg.flags = bor(band(seg.flags, bnot(6)), lshift(check, 1))
  if check == CHECK_PENDING then
    redis.call("ZADD", P .. "chk", seg.r_first, key)  -- oldest first
  elseif old == CHECK_PENDING then
    redis.call("ZREM", P .. "chk", key)
  end
end

local function room_of(key)
  local first = string.find(key, SEP, 1, true)
  local second = string.find(key, SEP, first + 1, true)
  return string.sub(key, 1, second - 1)
end

local function biz_of(key)
  return string.sub(key, 1, string.find(key, SEP, 1, true) - 1)
end

-- The label index of a BizID, bounded by MAX_APPS (then "other"); and 1 if it overflowed.
local function app_index(biz)
  local idx = redis.call("HGET", P .. "apps", biz)
  if idx then return tonumber(idx), 0 end
  local n = redis.call("LLEN", P .. "applist")
  local other = redis.call("HGET", P .. "apps", "other")
  if n - (other and 1 or 0) >= MAX_APPS then
    if not other then
      redis.call("RPUSH", P .. "applist", "other")
      redis.call("HSET", P .. "apps", "other", n)
      other = n
    end
    return tonumber(other), 1
  end
  redis.call("RPUSH", P .. "applist", biz)
  redis.call("HSET", P .. "apps", biz, n)
  return n, 0
end

local function app_label(idx)
  return redis.call("LINDEX", P .. "applist", idx)
end

-- Moves a segment's contribution to the shared gauges from `old` to `new` (nil: none).
local function move(key, seg, old, new)
  local T = P .. "t"
  if old ~= nil then redis.call("HINCRBY", T, "st:" .. old, -1) end
  if new ~= nil then redis.call("HINCRBY", T, "st:" .. new, 1) end
  local was_rec, is_rec = old ~= nil and LIVE[old] or false, new ~= nil and LIVE[new] or false
  local app = tostring(seg.app)
  if was_rec ~= is_rec then
    local room = room_of(key)
    local sec = string.format("%d", seg.ts_s)
    if is_rec then
      redis.call("HINCRBY", T, "a:" .. app .. ":" .. seg.mode, 1)
      if redis.call("HINCRBY", P .. "rooms", room, 1) == 1 then redis.call("HINCRBY", T, "r:" .. app, 1) end
      if redis.call("HINCRBY", P .. "sc:" .. app, sec, 1) == 1 then
        redis.call("ZADD", P .. "ss:" .. app, seg.ts_s, sec)
      end
    else
      redis.call("HINCRBY", T, "a:" .. app .. ":" .. seg.mode, -1)
      if redis.call("HINCRBY", P .. "rooms", room, -1) <= 0 then
        redis.call("HDEL", P .. "rooms", room)
        redis.call("HINCRBY", T, "r:" .. app, -1)
      end
      if redis.call("HINCRBY", P .. "sc:" .. app, sec, -1) <= 0 then
        redis.call("HDEL", P .. "sc:" .. app, sec)
        redis.call("ZREM", P .. "ss:" .. app, sec)
      end
    end
  end
  if old == STUCK then redis.call("HINCRBY", T, "s:" .. app, -1)
  elseif old == UPLOAD_MISSING then redis.call("HINCRBY", T, "m:" .. app, -1) end
  if new == STUCK then redis.call("HINCRBY", T, "s:" .. app, 1)
  elseif new == UPLOAD_MISSING then redis.call("HINCRBY", T, "m:" .. app, 1) end
  if old ~= nil and PROBLEM[old] then redis.call("ZREM", P .. "ix:" .. old, key) end
  if new ~= nil and PROBLEM[new] then redis.call("ZADD", P .. "ix:" .. new, seg.r_first, key) end
  if old == UPLOADED then redis.call("ZREM", P .. "upl", key) end
  if new == UPLOADED then redis.call("ZADD", P .. "upl", now, key) end
end

-- Recompute a segment's state and next deadline. Returns the problem state it entered (or -1)
-- and the event type whose start was just found lost (or "").
local function settle(key, seg, old)
  local new, state_deadline = derive(seg.seen, seg.r_first, seg.r_complete)
  -- lifecycle.after_blind
  if not CHECK_IN_COS and CHECKED[new] and redis.call("HEXISTS", P .. "bw", key) == 1 then
    new = UNVERIFIED
  end
  local orphaned = ""
  if band(seg.flags, START_LOST) == 0 and not has(seg.seen, S) and now >= seg.r_first + WINDOW then
    seg.flags = bor(seg.flags, START_LOST)
    orphaned = has(seg.seen, U) and "uploaded" or "completed"
  end
  if holds(old, new, check_of(seg)) then
    set_check(key, seg, CHECK_PENDING)  -- held where it is until its file is looked up
    new = old
  end
  local entered = -1
  if new ~= old then
    move(key, seg, old, new)
    if PROBLEM[new] or new == UNVERIFIED then entered = new end
    seg.state = new
  end
  redis.call("ZADD", P .. "due", math.min(state_deadline, seg.expires), key)
  return entered, orphaned
end

local function remove(key, seg)
  move(key, seg, seg.state, nil)
  redis.call("ZREM", P .. "chk", key)
  redis.call("HDEL", P .. "bw", key)
  redis.call("DEL", P .. "s:" .. key)
  redis.call("ZREM", P .. "due", key)
  redis.call("HINCRBY", P .. "t", "n", -1)
end

-- Make room for one segment: the oldest uploaded one, else the one due soonest.
local function evict_one()
  for _, index in ipairs({"upl", "due"}) do
    local victim = redis.call("ZRANGE", P .. index, 0, 0)[1]
    if victim then
      local raw = redis.call("GET", P .. "s:" .. victim)
      if raw then
        local seg = unpack(raw)
        remove(victim, seg)
        return seg.state
      end
      redis.call("ZREM", P .. index, victim)  -- a key that expired on its own
    end
  end
  return -1
end

if op == "record" then
  -- key, event bit, sender Timestamp, record mode (0, 1, 2), BizID, FileName
  local key, b, ts, mode, biz = ARGV[11], tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14]), ARGV[15]
  local file = ARGV[16]
  local raw = redis.call("GET", P .. "s:" .. key)
  local seg, old
  local evicted, overflow = -1, 0
  if raw then
    seg = unpack(raw)
    old = seg.state
  else
    if tonumber(redis.call("HGET", P .. "t", "n") or "0") >= MAX_SEGMENTS then
      evicted = evict_one()
    end
    local app
    app, overflow = app_index(biz)
    seg = {seen = 0, state = -1, mode = mode, flags = 0, app = app, ts_s = 0, ts_c = 0, ts_u = 0,
           r_first = now, r_complete = now, expires = now + RETENTION, file = ""}
    redis.call("HINCRBY", P .. "t", "n", 1)
  end
  local result = classify(seg.seen, b, old)
  local label = app_label(seg.app)
  if result == DUPLICATE then
    return {result, label, seg.mode, false, false, -1, "", evicted, overflow}
  end
  seg.seen = bor(seg.seen, b)
  redis.call("HDEL", P .. "bw", key)  -- heard from again: paged as usual from here
  if CHECK_IN_COS then
    if seg.file == "" then seg.file = file end
    -- lifecycle.check_after_event: a new event ends a pending hold and voids an answer,
    -- except a start, which says nothing about the file
    local chk = check_of(seg)
    if chk == CHECK_PENDING or (chk ~= CHECK_NONE and b ~= S) then
      set_check(key, seg, CHECK_NONE)
    end
  end
  if b == C then
    seg.ts_c = ts
    seg.r_complete = now
  elseif b == U then
    seg.ts_u = ts
  else
    seg.ts_s = ts
  end
  local duration, upload_delay = false, false
  if has(seg.seen, S) and has(seg.seen, C) and (b == S or b == C) then duration = seg.ts_c - seg.ts_s end
  if has(seg.seen, C) and has(seg.seen, U) and (b == C or b == U) then upload_delay = seg.ts_u - seg.ts_c end
  seg.expires = now + RETENTION
  if old == nil then old = -1 end
  local entered, orphaned = settle(key, seg, old ~= -1 and old or nil)
  save(key, seg)
  -- Integers survive the trip back to the client; durations are whole seconds.
  return {result, label, seg.mode, duration, upload_delay, entered, orphaned, evicted, overflow}
end

if op == "sweep" then
  local budget = tonumber(ARGV[11])
  local due = redis.call("ZRANGEBYSCORE", P .. "due", "-inf", now, "LIMIT", 0, budget)
  local out = {}
  for _, key in ipairs(due) do
    local raw = redis.call("GET", P .. "s:" .. key)
    if not raw then
      redis.call("ZREM", P .. "due", key)
    else
      local seg = unpack(raw)
      -- Settle first: a segment that became a problem before its retention ran out is
      -- reported (and evicted) in that state, even if the sweep fell behind.
      local entered, orphaned = settle(key, seg, seg.state)
      local evicted = -1
      if seg.expires <= now then
        evicted = seg.state
        remove(key, seg)
      else
        save(key, seg)
      end
      if entered ~= -1 or orphaned ~= "" or evicted ~= -1 then
        local window = entered == UNVERIFIED and redis.call("HGET", P .. "bw", key) or ""
        out[#out + 1] = {key, entered, orphaned, evicted, app_label(seg.app), window}
      end
    end
  end
  local more = redis.call("ZCOUNT", P .. "due", "-inf", now)
  return {out, more}
end

if op == "claim" then
  -- limit, lease seconds. Atomic: a segment is claimed by one replica at a time; a claim not
  -- resolved within its lease (the replica died) becomes claimable again.
  local limit, lease = tonumber(ARGV[11]), tonumber(ARGV[12])
  local keys = redis.call("ZRANGEBYSCORE", P .. "chk", "-inf", now, "LIMIT", 0, limit)
  local out = {}
  for _, key in ipairs(keys) do
    local raw = redis.call("GET", P .. "s:" .. key)
    if not raw then
      redis.call("ZREM", P .. "chk", key)
    else
      local seg = unpack(raw)
      redis.call("ZADD", P .. "chk", now + lease, key)
      local pending = derive(seg.seen, seg.r_first, seg.r_complete)
      out[#out + 1] = {key, pending, seg.file, app_label(seg.app)}
    end
  end
  return out
end

if op == "resolve" then
  -- key, answer ("found", "not_found", "error")
  local key, answer = ARGV[11], ARGV[12]
  local raw = redis.call("GET", P .. "s:" .. key)
  if not raw then
    redis.call("ZREM", P .. "chk", key)
    return {-2}
  end
  local seg = unpack(raw)
  if check_of(seg) ~= CHECK_PENDING then return {-2} end
  local lost = 0
  if answer == "found" then
    -- lifecycle.found_in_cos
    lost = band(bor(C, U), bnot(seg.seen))
    seg.seen = bor(seg.seen, lost)
    seg.flags = bor(band(seg.flags, bnot(24)), lshift(lost, 2))
    set_check(key, seg, CHECK_NONE)
  else
    set_check(key, seg, answer == "not_found" and CHECK_CONFIRMED or CHECK_UNCONFIRMED)
  end
  local entered, orphaned = settle(key, seg, seg.state)
  save(key, seg)
  return {entered, lost, check_of(seg), orphaned, app_label(seg.app)}
end

if op == "blind" then
  -- window start, end, offset, count: marks the live segments among `count` of the `due`
  -- index from `offset` (the caller pages through it: one script never holds Redis long).
  local window, offset, count = ARGV[11] .. " " .. ARGV[12], tonumber(ARGV[13]), tonumber(ARGV[14])
  local keys = redis.call("ZRANGE", P .. "due", offset, offset + count - 1)
  local marked = 0
  for _, key in ipairs(keys) do
    local raw = redis.call("GET", P .. "s:" .. key)
    if raw and BLIND_MARKED[unpack(raw).state] then
      redis.call("HSET", P .. "bw", key, window)
      marked = marked + 1
    end
  end
  return {marked, #keys}
end

if op == "apps" then
  for i = 11, #ARGV do app_index(ARGV[i]) end
  return redis.call("LRANGE", P .. "applist", 0, -1)
end

return redis.error_reply("unknown op " .. tostring(op))
