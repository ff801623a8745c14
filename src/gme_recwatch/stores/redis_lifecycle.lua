-- The lifecycle rules of gme_recwatch/lifecycle.py, for the Redis store, run atomically inside
-- Redis so that any number of replicas share one truth and every deadline fires exactly once.
--
-- Each rule function below mirrors the Python function named in the comment above it
-- (`-- lifecycle.<name>`), argument for argument (the configuration comes from ARGV instead of
-- a Config), and each tally move mirrors stores/tallies.py (`-- tallies.<name>`). The test-only
-- op "rule" runs one rule function by name: tests/test_lifecycle.py runs its tables against
-- both copies, and checks that the constants here equal the Python ones. tests/test_stores.py
-- runs the same conformance suite against this script and the in-memory store.
--
-- ARGV: op, prefix, now (or "" for Redis TIME: the one clock every replica agrees on),
--       max_recording, upload_grace, reorder_window, retention, max_segments, max_apps,
--       check_in_cos with the tail's quiet time (see below), then the op's own arguments.
-- KEYS: the keys below that have fixed names, and the segments the op is given (stores/redis.py
--       _FIXED_KEYS), so a cluster node or proxy routes the call by them and refuses it, before
--       it writes anything, while a slot migration splits them. The prefix carries a hash tag
--       ("{gme-recwatch}:"): every key the script makes from it (per app, or found in an index)
--       is in the same slot (docs/design.md).
--
-- Keys (under the prefix):
--   s:<segment key>   the segment, packed (see unpack_seg/save); no TTL: the sweep forgets it
--                     when its retention runs out, with every tally (a key that vanished all
--                     the same -- evicted, deleted by hand -- is counted by the sweep)
--   due               zset: segment key -> when the sweep must next look at it
--   seq               counter: the order of arrival the two eviction indexes below share
--   age               zset: segment key -> its place in the order of first receipt
--   upl               zset: segments that reached lifecycle.EVICTED_FIRST -> their place in the
--                     order they first got there (evicted first; one that left the state keeps
--                     its place until eviction passes it over, as the in-memory queue does)
--   ix:<state>        zset: segments in a problem state -> first receive time (for the API)
--   t                 hash: the shared gauges (n, pend: checks held, st:<state>, a:<app>:<mode>, r:<app>,
--                     s:<app>, m:<app>)
--   rooms             hash: room -> its segments recording
--   sc:<app>, ss:<app> per app: recording starts per second (hash) and those seconds (zset)
--   apps, applist     BizID -> label index; the labels in order ("other" once max_apps is hit)
--   chk               zset: segments whose COS check is pending -> when they may be claimed
--                     (first receive time; once claimed, when the claim's lease runs out; after
--                     a lookup that gave no answer, when it is retried: lifecycle.retry_after)
--   bw                hash: segments marked by a blind window -> "<start> <end>" (Unix times)
--   sb                hash: segments whose start may be lost in a blind window of ours
--                     (lifecycle.start_blind_marks) -> "<start> <end>"; never cleared by a callback
--   lbw               the latest blind window marked ("<start> <end>"): a segment created later
--                     whose first event is not a start is held against it
--   sr                hash: recording stream (lifecycle.stream_of) -> "<lowest SeqNo> <next SeqNo> <mode> <app>
--                     <last heard> <tail due> <SeqNo of the file> <latest file named>"
--   sdue              zset: stream -> when the sweep must next look at it (its tail, or expiry)
--   tails             zset: streams due for a folder listing -> when they may be claimed
--   slru              zset: stream -> its place in the order last heard from (the shared `seq`)
--   since             when this store began tracking (lifecycle.revealed); gone with a reset
--   ns                hash: BizIDs whose start callbacks are never sent (lifecycle.expects_start)
-- (The replicas' heartbeats and the store's epoch marker are redis_replicas.lua's.)

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
-- ARGV[10]: "0" without COS checks, else the tail's quiet time (stores/redis.py cfg_args)
local CHECK_IN_COS = ARGV[10] ~= "0"
local TAIL_QUIET = tonumber(ARGV[10])

local INF = math.huge
-- lifecycle.SEEN_STARTED, SEEN_COMPLETED, SEEN_UPLOADED
local SEEN_STARTED, SEEN_COMPLETED, SEEN_UPLOADED = 1, 2, 4
-- lifecycle.State
local RECORDING, COMPLETED, UPLOADED, STUCK, UPLOAD_MISSING, ORPHAN, UNVERIFIED = 0, 1, 2, 3, 4, 5, 6
local EXPECTED, UNANNOUNCED = 7, 8
-- lifecycle.Check
local CHECK_NONE, CHECK_PENDING, CHECK_CONFIRMED, CHECK_UNCONFIRMED = 0, 1, 2, 3
-- lifecycle.Result, in the order of stores/redis.py _RESULTS
local ACCEPTED, DUPLICATE, OUT_OF_ORDER, LATE = 0, 1, 2, 3
-- lifecycle.BLIND_MARKED
local BLIND_MARKED = {[RECORDING] = true, [COMPLETED] = true}
-- lifecycle.EVICTED_FIRST
local EVICTED_FIRST = {[UPLOADED] = true}
-- lifecycle.PROBLEM_STATES
local PROBLEM_STATES = {[STUCK] = true, [UPLOAD_MISSING] = true, [ORPHAN] = true, [UNANNOUNCED] = true}
-- lifecycle.LIVE_RECORDING
local LIVE_RECORDING = {[RECORDING] = true, [STUCK] = true}
-- lifecycle.CHECKED_STATES
local CHECKED_STATES = {[STUCK] = true, [UPLOAD_MISSING] = true, [UNANNOUNCED] = true}
-- lifecycle.MAX_GAP
local MAX_GAP = 64
-- seg.flags (stores/redis.py _FLAG_*): bit 0 the start-lost mark, bits 1-2 the COS check
-- (lifecycle.Check), bits 3-4 the events found lost (the `seen` bits of completed and uploaded,
-- shifted by 2), bit 5 a start found lost (an unannounced segment whose file was found).
local FLAG_START_LOST, FLAG_CHECK_SHIFT, FLAG_LOST_SHIFT, FLAG_LOST_START = 1, 1, 2, 32
local SEP = "\0"

local band, bor, bnot, lshift, rshift = bit.band, bit.bor, bit.bnot, bit.lshift, bit.rshift
local CHECK_MASK = lshift(3, FLAG_CHECK_SHIFT)
local LOST_MASK = lshift(bor(SEEN_COMPLETED, SEEN_UPLOADED), FLAG_LOST_SHIFT)

local function has(seen, b) return band(seen, b) ~= 0 end

-- ------------------------------------------------------------------ the rules (pure)

-- lifecycle.derive_state (expects_start nil: true)
local function derive_state(seen, r_first, r_complete, now, expects_start)
  if seen == 0 then
    local window = r_first + WINDOW
    if now < window then return EXPECTED, window end
    return UNANNOUNCED, INF
  end
  if has(seen, SEEN_STARTED) or expects_start == false then
    if has(seen, SEEN_UPLOADED) then return UPLOADED, INF end
    if not has(seen, SEEN_COMPLETED) then
      local d = r_first + MAX_REC
      if now >= d then return STUCK, INF end
      return RECORDING, d
    end
    local d = r_complete + GRACE
    if now >= d then return UPLOAD_MISSING, INF end
    return COMPLETED, d
  end
  local window = r_first + WINDOW
  if has(seen, SEEN_UPLOADED) then
    if now < window then return UPLOADED, window end
    return ORPHAN, INF
  end
  local d = r_complete + GRACE
  if now >= d then
    if now < window then return UPLOAD_MISSING, window end
    return UPLOAD_MISSING, INF
  end
  if now < window then return COMPLETED, math.min(window, d) end
  return ORPHAN, d
end

-- lifecycle.start_is_lost (expects_start nil: true)
local function start_is_lost(seen, r_first, now, expects_start)
  return expects_start ~= false and seen ~= 0 and not has(seen, SEEN_STARTED) and now >= r_first + WINDOW
end

-- lifecycle.first_heard
local function first_heard(seen, r_first, now)
  if seen == 0 then return now end
  return r_first
end

-- lifecycle.classify
local function classify(seen, b, state)
  if has(seen, b) then return DUPLICATE end
  if state ~= nil and (PROBLEM_STATES[state] or state == UNVERIFIED) then return LATE end
  if seen > b then return OUT_OF_ORDER end
  return ACCEPTED
end

-- lifecycle.measure: nil for a duration the event did not complete
local function measure(seen, b, ts_s, ts_c, ts_u)
  local duration, upload_delay
  if has(seen, SEEN_STARTED) and has(seen, SEEN_COMPLETED) and (b == SEEN_STARTED or b == SEEN_COMPLETED) then
    duration = ts_c - ts_s
  end
  if has(seen, SEEN_COMPLETED) and has(seen, SEEN_UPLOADED) and (b == SEEN_COMPLETED or b == SEEN_UPLOADED) then
    upload_delay = ts_u - ts_c
  end
  return duration, upload_delay
end

-- lifecycle.holds_for_check
local function holds_for_check(old, new, check)
  return CHECK_IN_COS and old ~= nil and CHECKED_STATES[new] == true and new ~= old
    and (check == CHECK_NONE or check == CHECK_PENDING)
end

-- lifecycle.check_after_event
local function check_after_event(check, b)
  if check == CHECK_PENDING or (check ~= CHECK_NONE and b ~= SEEN_STARTED) then return CHECK_NONE end
  return check
end

-- lifecycle.found_in_cos
local function found_in_cos(seen)
  local lost = band(bor(SEEN_COMPLETED, SEEN_UPLOADED), bnot(seen))
  if seen == 0 then lost = bor(lost, SEEN_STARTED) end
  return bor(seen, lost), lost
end

-- lifecycle.check_after_answer
local function check_after_answer(answer)
  if answer == "found" then return CHECK_NONE end
  if answer == "not_found" then return CHECK_CONFIRMED end
  return CHECK_UNCONFIRMED
end

-- lifecycle.can_mark
local function can_mark(state)
  return state ~= nil and BLIND_MARKED[state] == true
end

-- lifecycle.after_blind
local function after_blind(new, blind, start_blind)
  if blind and not CHECK_IN_COS and CHECKED_STATES[new] then return UNVERIFIED end
  if start_blind and new == ORPHAN then return UNVERIFIED end
  if start_blind and new == UNANNOUNCED and not CHECK_IN_COS then return UNVERIFIED end
  return new
end

-- lifecycle.start_blind_marks (state nil: being created)
local function start_blind_marks(seen, state, first_heard, window_start, window_end)
  if has(seen, SEEN_STARTED) or state == ORPHAN then return false end
  local earliest = first_heard - MAX_REC - GRACE
  return window_end >= earliest and window_start <= first_heard + WINDOW
end

-- lifecycle.blind_marks
local function blind_marks(state, last_heard, window_end)
  return BLIND_MARKED[state] == true and last_heard <= window_end
end

-- lifecycle.is_expired
local function is_expired(expires, now)
  return expires <= now
end

-- lifecycle.apply_event: result, seen, check, blind, r_complete, expires
local function apply_event(seen, b, state, check, blind, r_complete, expires, now)
  local result = classify(seen, b, state)
  if result == DUPLICATE then return result, seen, check, blind, r_complete, expires end
  if b == SEEN_COMPLETED then r_complete = now end
  return result, bor(seen, b), check_after_event(check, b), false, r_complete, now + RETENTION
end

-- lifecycle.settle: state, deadline, check, start_lost, entered (nil: none), expired
local function settle(seen, r_first, r_complete, expires, old, check, start_lost, blind, now, start_blind,
                      expects_start)
  local new, next_change = derive_state(seen, r_first, r_complete, now, expects_start)
  new = after_blind(new, blind, start_blind)
  start_lost = start_lost or (not start_blind and start_is_lost(seen, r_first, now, expects_start))
  if old ~= nil and holds_for_check(old, new, check) then
    check, new = CHECK_PENDING, old
  end
  local entered
  if new ~= old and (PROBLEM_STATES[new] or new == UNVERIFIED) then entered = new end
  return new, math.min(next_change, expires), check, start_lost, entered, is_expired(expires, now)
end

-- lifecycle.apply_answer: seen, lost, check
local function apply_answer(seen, answer)
  if answer == "found" then
    local lost
    seen, lost = found_in_cos(seen)
    return seen, lost, check_after_answer(answer)
  end
  return seen, 0, check_after_answer(answer)
end

-- lifecycle.claimable
local function claimable(check)
  return check == CHECK_PENDING or check == CHECK_UNCONFIRMED
end

-- lifecycle.retry_after
local function retry_after(answer, waited, jitter, first, most)
  if answer ~= "error" then return -1 end
  local bound = waited > first and waited or first
  return jitter * (bound < most and bound or most)
end

-- lifecycle.confirms
local function confirms(before, after)
  return before == CHECK_UNCONFIRMED and after == CHECK_CONFIRMED
end

-- lifecycle.deadline_passed: the deadline's name and time (nil for no problem state)
local function deadline_passed(state, seen, r_first, r_complete, start_blind, now)
  local orphan = state == UNVERIFIED and start_blind and not has(seen, SEEN_STARTED)
  if orphan and not has(seen, SEEN_UPLOADED) and (now or INF) >= r_complete + GRACE then
    orphan = false  -- its upload is missing as well: that is the deadline that made it
  end
  if state == ORPHAN or state == UNANNOUNCED or orphan or (state == UNVERIFIED and seen == 0) then
    return "reorder_window_seconds", r_first + WINDOW
  end
  if not CHECKED_STATES[state] and state ~= UNVERIFIED then return nil end
  if has(seen, SEEN_COMPLETED) then return "upload_grace_seconds", r_complete + GRACE end
  return "max_recording_seconds", r_first + MAX_REC
end

-- lifecycle.stream_of
local function stream_of(key)
  return string.match(key, "^(.*)%z")  -- (%z: a NUL, lifecycle.SEP, in a Lua 5.1 pattern)
end

-- lifecycle.revealed
local function revealed(low_seq, next_seq, seq_no, tracking_since, now)
  if next_seq < 0 then
    local low = seq_no
    if tracking_since + seq_no * MAX_REC + GRACE <= now then low = 0 end
    if low > seq_no - MAX_GAP then return low, seq_no end
    return seq_no - MAX_GAP, seq_no
  end
  if seq_no >= next_seq then
    if next_seq > seq_no - MAX_GAP then return next_seq, seq_no end
    return seq_no - MAX_GAP, seq_no
  end
  if seq_no < low_seq then
    if low_seq < seq_no + 1 + MAX_GAP then return seq_no + 1, low_seq end
    return seq_no + 1, seq_no + 1 + MAX_GAP
  end
  return seq_no, seq_no
end

-- lifecycle.tail_due
local function tail_due(now)
  if CHECK_IN_COS then return now + TAIL_QUIET end
  return INF
end

-- What the "rule" op may run.
local RULES = {
  derive_state = derive_state, start_is_lost = start_is_lost, classify = classify,
  measure = measure, holds_for_check = holds_for_check, check_after_event = check_after_event,
  found_in_cos = found_in_cos, check_after_answer = check_after_answer,
  after_blind = after_blind, blind_marks = blind_marks, start_blind_marks = start_blind_marks, can_mark = can_mark, is_expired = is_expired,
  apply_event = apply_event,
  settle = settle, apply_answer = apply_answer, claimable = claimable, retry_after = retry_after,
  confirms = confirms, deadline_passed = deadline_passed, first_heard = first_heard,
  stream_of = stream_of, revealed = revealed, tail_due = tail_due,
}

-- ------------------------------------------------------------------ the books (Redis)

local FORMAT = "<BbBBHdddddd"

-- The packed fields, then the FileName (kept with COS checks on; empty otherwise).
local function unpack_seg(raw)
  local seen, state, mode, flags, app, ts_s, ts_c, ts_u, r_first, r_complete, expires, pos =
    struct.unpack(FORMAT, raw)
  return {seen = seen, state = state, mode = mode, flags = flags, app = app, ts_s = ts_s,
          ts_c = ts_c, ts_u = ts_u, r_first = r_first, r_complete = r_complete, expires = expires,
          file = string.sub(raw, pos)}
end

local function save(key, seg)
  redis.call("SET", P .. "s:" .. key,
    struct.pack(FORMAT, seg.seen, seg.state, seg.mode, seg.flags, seg.app, seg.ts_s, seg.ts_c,
      seg.ts_u, seg.r_first, seg.r_complete, seg.expires) .. seg.file)  -- (SET drops a TTL)
end

local function next_seq()
  return redis.call("INCR", P .. "seq")
end

local function check_of(seg) return rshift(band(seg.flags, CHECK_MASK), FLAG_CHECK_SHIFT) end

-- The checks held (PENDING), counted as the in-memory store counts them (`chk` holds the lookups
-- to retry too). A store written before this tally counts its held ones once, first.
local function count_pending(delta)
  local T = P .. "t"
  if redis.call("HEXISTS", T, "pend") == 0 then
    local n = 0
    for _, key in ipairs(redis.call("ZRANGE", P .. "chk", 0, -1)) do
      local raw = redis.call("GET", P .. "s:" .. key)
      if raw and check_of(unpack_seg(raw)) == CHECK_PENDING then n = n + 1 end
    end
    redis.call("HSET", T, "pend", n)
  end
  redis.call("HINCRBY", T, "pend", delta)
end

local function set_check(key, seg, check)
  local old = check_of(seg)
  if old == check then return end
  seg.flags = bor(band(seg.flags, bnot(CHECK_MASK)), lshift(check, FLAG_CHECK_SHIFT))
  if old == CHECK_PENDING then count_pending(-1) end
  if check == CHECK_PENDING then count_pending(1) end
  if check == CHECK_PENDING then
    redis.call("ZADD", P .. "chk", seg.r_first, key)  -- oldest first
  elseif claimable(old) then  -- (an unconfirmed one waiting for its retry, too)
    redis.call("ZREM", P .. "chk", key)
  end
end

local function room_of(key)
  local first = string.find(key, SEP, 1, true)
  local second = string.find(key, SEP, first + 1, true)
  return string.sub(key, 1, second - 1)
end

-- tallies.Tallies.app: the label index of a BizID, bounded by MAX_APPS (then "other"); and 1
-- if it overflowed.
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

-- tallies.Tallies._recording_began
local function recording_began(app, mode, room, ts_s)
  local T, sec = P .. "t", string.format("%d", ts_s)
  redis.call("HINCRBY", T, "a:" .. app .. ":" .. mode, 1)
  if redis.call("HINCRBY", P .. "rooms", room, 1) == 1 then redis.call("HINCRBY", T, "r:" .. app, 1) end
  if redis.call("HINCRBY", P .. "sc:" .. app, sec, 1) == 1 then
    redis.call("ZADD", P .. "ss:" .. app, ts_s, sec)
  end
end

-- tallies.Tallies._recording_ended
local function recording_ended(app, mode, room, ts_s)
  local T, sec = P .. "t", string.format("%d", ts_s)
  redis.call("HINCRBY", T, "a:" .. app .. ":" .. mode, -1)
  if redis.call("HINCRBY", P .. "rooms", room, -1) <= 0 then
    redis.call("HDEL", P .. "rooms", room)
    redis.call("HINCRBY", T, "r:" .. app, -1)
  end
  if redis.call("HINCRBY", P .. "sc:" .. app, sec, -1) <= 0 then
    redis.call("HDEL", P .. "sc:" .. app, sec)
    redis.call("ZREM", P .. "ss:" .. app, sec)
  end
end

-- tallies.Tallies.move: a segment's contribution to the shared gauges moves from `old` to `new`
-- (nil: none). (The counters, stuck_total and missing_total, are each replica's own: see
-- stores/redis.py.) Then the indexes only this store keeps: problem states and uploads.
local function move(key, seg, old, new)
  local T, app = P .. "t", tostring(seg.app)
  if old ~= nil then redis.call("HINCRBY", T, "st:" .. old, -1) end
  if new ~= nil then redis.call("HINCRBY", T, "st:" .. new, 1) end
  local was_rec, is_rec = old ~= nil and LIVE_RECORDING[old] or false, new ~= nil and LIVE_RECORDING[new] or false
  if was_rec ~= is_rec then
    if is_rec then
      recording_began(app, seg.mode, room_of(key), seg.ts_s)
    else
      recording_ended(app, seg.mode, room_of(key), seg.ts_s)
    end
  end
  if old == STUCK then redis.call("HINCRBY", T, "s:" .. app, -1)
  elseif old == UPLOAD_MISSING then redis.call("HINCRBY", T, "m:" .. app, -1) end
  if new == STUCK then redis.call("HINCRBY", T, "s:" .. app, 1)
  elseif new == UPLOAD_MISSING then redis.call("HINCRBY", T, "m:" .. app, 1) end
  if old ~= nil and PROBLEM_STATES[old] then redis.call("ZREM", P .. "ix:" .. old, key) end
  if new ~= nil and PROBLEM_STATES[new] then redis.call("ZADD", P .. "ix:" .. new, seg.r_first, key) end
  if new ~= nil and EVICTED_FIRST[new] then redis.call("ZADD", P .. "upl", "NX", next_seq(), key) end
end

-- The books of a settle (stores/memory.py MemoryStore._settle): lifecycle.settle, then its
-- flags, tallies, check queue and deadline. Returns the problem state it entered (or -1), the
-- event type whose start was just found lost (or ""), and whether its retention ran out.
local function settle_segment(key, seg, old)
  local marked = band(seg.flags, FLAG_START_LOST) ~= 0
  local blind = redis.call("HEXISTS", P .. "bw", key) == 1
  local start_blind = not has(seg.seen, SEEN_STARTED) and redis.call("HEXISTS", P .. "sb", key) == 1
  local expects_start = redis.call("HEXISTS", P .. "ns", string.match(key, "^(%d+)")) == 0
  local new, deadline, check, start_lost, entered, expired = settle(
    seg.seen, seg.r_first, seg.r_complete, seg.expires, old, check_of(seg), marked, blind, now, start_blind,
    expects_start)
  local orphaned = ""
  if start_lost and not marked then
    seg.flags = bor(seg.flags, FLAG_START_LOST)
    orphaned = has(seg.seen, SEEN_UPLOADED) and "uploaded" or "completed"
  end
  set_check(key, seg, check)  -- held: its file is to be looked up, oldest first
  if new ~= old then
    move(key, seg, old, new)
    seg.state = new
  end
  redis.call("ZADD", P .. "due", deadline, key)
  return entered or -1, orphaned, expired
end

local function remove(key, seg)
  move(key, seg, seg.state, nil)
  if check_of(seg) == CHECK_PENDING then count_pending(-1) end
  redis.call("ZREM", P .. "chk", key)
  redis.call("HDEL", P .. "bw", key)
  redis.call("HDEL", P .. "sb", key)
  redis.call("DEL", P .. "s:" .. key)
  redis.call("ZREM", P .. "due", key)
  redis.call("ZREM", P .. "age", key)
  redis.call("ZREM", P .. "upl", key)
  redis.call("HINCRBY", P .. "t", "n", -1)
end

-- A segment key that is gone though its indexes name it (evicted by an evicting maxmemory-policy,
-- deleted by hand): out of every index and the count, and counted. Its share of the other
-- tallies went with it; `serve --check --online` refuses a Redis that evicts.
local function vanished(key)
  if redis.call("ZREM", P .. "due", key) == 1 then  -- every segment tracked is in `due`
    redis.call("HINCRBY", P .. "t", "n", -1)
    redis.call("HINCRBY", P .. "t", "vanished", 1)
  end
  redis.call("ZREM", P .. "chk", key)
  redis.call("HDEL", P .. "bw", key)
  redis.call("HDEL", P .. "sb", key)
  redis.call("ZREM", P .. "age", key)
  redis.call("ZREM", P .. "upl", key)
end

-- Make room for one segment (lifecycle.EVICTED_FIRST): the first to reach an evicted-first state
-- that is still in it, else the first heard of.
local function evict_one()
  while true do
    local victim = redis.call("ZRANGE", P .. "upl", 0, 0)[1]
    if not victim then break end
    local raw = redis.call("GET", P .. "s:" .. victim)
    if not raw then
      vanished(victim)
    else
      local seg = unpack_seg(raw)
      if EVICTED_FIRST[seg.state] then
        remove(victim, seg)
        return seg.state
      end
      redis.call("ZREM", P .. "upl", victim)  -- left the state since: passed over
    end
  end
  while true do
    local victim = redis.call("ZRANGE", P .. "age", 0, 0)[1]
    if not victim then return -1 end
    local raw = redis.call("GET", P .. "s:" .. victim)
    if not raw then
      vanished(victim)
    else
      local seg = unpack_seg(raw)
      remove(victim, seg)
      return seg.state
    end
  end
end

-- A new segment, having seen nothing yet, counted and placed in the order of first receipt
-- (making room for it first); the states of those evicted for it are appended to `evicted`.
local function insert(key, mode, app, evicted)
  if tonumber(redis.call("HGET", P .. "t", "n") or "0") >= MAX_SEGMENTS then
    evicted[#evicted + 1] = evict_one()
  end
  redis.call("HINCRBY", P .. "t", "n", 1)
  redis.call("ZADD", P .. "age", next_seq(), key)
  return {seen = 0, state = -1, mode = mode, flags = 0, app = app, ts_s = 0, ts_c = 0, ts_u = 0,
          r_first = now, r_complete = now, expires = now + RETENTION, file = ""}
end

-- A segment heard of for the first time by a callback of bit `b` (0: revealed by a later SeqNo):
-- its start may have gone into the latest blind window (lifecycle.start_blind_marks).
local function held_against_latest_window(key, b)
  local latest = redis.call("GET", P .. "lbw")
  if latest then
    local w_start, w_end = string.match(latest, "(%S+) (%S+)")
    if start_blind_marks(b, nil, now, tonumber(w_start), tonumber(w_end)) then
      redis.call("HSET", P .. "sb", key, latest)
    end
  end
end

local function unpack_stream(raw)
  local low, nxt, mode, app, last, tail, hint_seq, hint =
    string.match(raw, "^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (.*)$")
  return {low_seq = tonumber(low), next_seq = tonumber(nxt), mode = tonumber(mode), app = tonumber(app),
          last = tonumber(last), tail = tonumber(tail), hint_seq = tonumber(hint_seq), hint = hint}
end

local function save_stream(stream, rec)
  redis.call("HSET", P .. "sr", stream, string.format("%d %d %d %d %.17g %.17g %d ", rec.low_seq, rec.next_seq,
    rec.mode, rec.app, rec.last, rec.tail, rec.hint_seq) .. rec.hint)
  local expiry = rec.last + RETENTION
  redis.call("ZADD", P .. "sdue", rec.tail < expiry and rec.tail or expiry, stream)
end

-- A stream out of every index (its retention ran out, or room was made for another).
local function forget_stream(stream)
  redis.call("HDEL", P .. "sr", stream)
  for _, index in ipairs({"sdue", "tails", "slru"}) do redis.call("ZREM", P .. index, stream) end
end

-- The record of a stream an index names; nil, and out of that index, if it is gone.
local function stream_in(index, stream)
  local raw = redis.call("HGET", P .. "sr", stream)
  if raw then return unpack_stream(raw) end
  redis.call("ZREM", P .. index, stream)
  return nil
end

-- The SeqNos low..high-1 of `stream` no segment holds: segments that have seen nothing, expected
-- from now (stores/memory.py MemoryStore._expect).
local function expect(stream, low, high, mode, app, evicted)
  for n = low, high - 1 do
    local gap = stream .. SEP .. string.format("%d", n)  -- (`..` would write 1e+14)
    if redis.call("EXISTS", P .. "s:" .. gap) == 0 then
      local seg = insert(gap, mode, app, evicted)
      held_against_latest_window(gap, 0)
      settle_segment(gap, seg, nil)
      save(gap, seg)
    end
  end
end

-- The stream of `key` heard from (stores/memory.py MemoryStore._heard, stores/streams.py): the
-- SeqNos below `seq` it reveals (lifecycle.revealed) that no segment holds are expected from now.
local function heard(key, seq, mode, app, file, evicted)
  local stream = stream_of(key)
  local raw = redis.call("HGET", P .. "sr", stream)
  local rec
  if raw then rec = unpack_stream(raw) end
  redis.call("SET", P .. "since", string.format("%.17g", now), "NX")
  local since = tonumber(redis.call("GET", P .. "since"))
  local low, high = revealed(rec and rec.low_seq or -1, rec and rec.next_seq or -1, seq, since, now)
  if not rec and redis.call("HLEN", P .. "sr") >= MAX_SEGMENTS then
    -- At most MAX_SEGMENTS streams (stores/streams.py): the one heard from longest ago goes, and
    -- tracking counts as begun anew (a forgotten stream is not taken for a new one).
    local oldest = redis.call("ZRANGE", P .. "slru", 0, 0)[1]
    if oldest then forget_stream(oldest) end
    redis.call("SET", P .. "since", string.format("%.17g", now))
  end
  redis.call("ZADD", P .. "slru", next_seq(), stream)
  if rec then
    if seq + 1 > rec.next_seq then rec.next_seq = seq + 1 end
    if low < rec.low_seq then rec.low_seq = low end
    if seq < rec.low_seq then rec.low_seq = seq end
    rec.last, rec.tail = now, tail_due(now)
  else
    rec = {low_seq = low, next_seq = seq + 1, mode = mode, app = app, last = now, tail = tail_due(now),
           hint_seq = -1, hint = ""}
  end
  if file ~= "" and seq >= rec.hint_seq then rec.hint, rec.hint_seq = file, seq end
  save_stream(stream, rec)
  expect(stream, low, high, mode, app, evicted)
end

-- key, event bit, sender Timestamp, record mode (0, 1, 2), BizID, FileName
local function record(key, b, ts, mode, biz, file)
  local raw = redis.call("GET", P .. "s:" .. key)
  local seg, old
  local evicted, overflow = {}, 0
  if raw then
    seg = unpack_seg(raw)
    old = seg.state
  else
    local app
    app, overflow = app_index(biz)
    seg = insert(key, mode, app, evicted)
  end
  if seg.seen == 0 then  -- heard of for the first time: new, or revealed by a later SeqNo
    seg.r_first = first_heard(0, seg.r_first, now)
    held_against_latest_window(key, b)
  end
  local blind = redis.call("HEXISTS", P .. "bw", key) == 1
  local result, seen, check, still_blind, r_complete, expires = apply_event(
    seg.seen, b, old, check_of(seg), blind, seg.r_complete, seg.expires, now)
  local label = app_label(seg.app)
  if result == DUPLICATE then
    return {result, label, seg.mode, false, false, -1, "", evicted, overflow}
  end
  local seq = tonumber(string.match(key, "%z(%d+)$"))
  if blind and not still_blind then
    redis.call("HDEL", P .. "bw", key)  -- heard from again: paged as usual from here
  end
  if CHECK_IN_COS and seg.file == "" then seg.file = file end
  set_check(key, seg, check)
  if b == SEEN_COMPLETED then
    seg.ts_c = ts
  elseif b == SEEN_UPLOADED then
    seg.ts_u = ts
  else
    seg.ts_s = ts
  end
  seg.seen, seg.r_complete, seg.expires = seen, r_complete, expires
  local duration, upload_delay = measure(seg.seen, b, seg.ts_s, seg.ts_c, seg.ts_u)
  local entered, orphaned = settle_segment(key, seg, old)
  save(key, seg)
  heard(key, seq, seg.mode, seg.app, CHECK_IN_COS and file or "", evicted)
  -- Integers survive the trip back to the client (durations are whole seconds); nil does not.
  return {result, label, seg.mode, duration or false, upload_delay or false, entered, orphaned,
          evicted, overflow}
end

if op == "record" then
  return record(ARGV[11], tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14]), ARGV[15], ARGV[16])
end

if op == "records" then
  -- Callbacks that arrived together (stores/redis.py RedisStore.record): n, then n times the
  -- arguments of "record"; one reply each, in order, as if each were its own call.
  local n, out = tonumber(ARGV[11]), {}
  for i = 0, n - 1 do
    local a = 12 + 6 * i
    out[i + 1] = record(ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]),
      ARGV[a + 4], ARGV[a + 5])
  end
  return out
end

if op == "sweep" then
  local budget = tonumber(ARGV[11])
  -- Streams first (stores/streams.py Streams.sweep): forgotten after their retention, their
  -- tails queued for a listing once quiet.
  for _, stream in ipairs(redis.call("ZRANGEBYSCORE", P .. "sdue", "-inf", now, "LIMIT", 0, budget)) do
    local rec = stream_in("sdue", stream)
    if rec then
      if rec.last + RETENTION <= now then
        forget_stream(stream)
      else
        if rec.tail <= now then
          rec.tail = INF  -- listed once; a callback arms it again
          redis.call("ZADD", P .. "tails", now, stream)
        end
        save_stream(stream, rec)
      end
    end
  end
  local due = redis.call("ZRANGEBYSCORE", P .. "due", "-inf", now, "LIMIT", 0, budget)
  local out = {}
  for _, key in ipairs(due) do
    local raw = redis.call("GET", P .. "s:" .. key)
    if not raw then
      vanished(key)
    else
      local seg = unpack_seg(raw)
      -- Settle first: a segment that became a problem before its retention ran out is
      -- reported (and evicted) in that state, even if the sweep fell behind.
      local entered, orphaned, expired = settle_segment(key, seg, seg.state)
      local window = entered == UNVERIFIED
        and (redis.call("HGET", P .. "bw", key) or redis.call("HGET", P .. "sb", key)) or ""
      local evicted = -1
      if expired then
        evicted = seg.state
        remove(key, seg)
      else
        save(key, seg)
      end
      if entered ~= -1 or orphaned ~= "" or evicted ~= -1 then
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
      local seg = unpack_seg(raw)
      redis.call("ZADD", P .. "chk", now + lease, key)
      local pending = derive_state(seg.seen, seg.r_first, seg.r_complete, now)
      local file, anchor = seg.file, -1
      if seg.seen == 0 then  -- unannounced: its stream's latest file says where to look
        local rec = redis.call("HGET", P .. "sr", stream_of(key))
        if rec then
          rec = unpack_stream(rec)
          file, anchor = rec.hint, rec.hint_seq
        else
          file = ""
        end
      end
      out[#out + 1] = {key, pending, file, app_label(seg.app), anchor, seg.mode}
    end
  end
  return out
end

if op == "tails" then
  -- limit, lease seconds: streams due for a folder listing, each claimed by one replica (a claim
  -- not answered within its lease is handed out again); each as its stream, record mode, next
  -- SeqNo, latest file, its SeqNo and app label.
  local limit, lease = tonumber(ARGV[11]), tonumber(ARGV[12])
  local out = {}
  for _, stream in ipairs(redis.call("ZRANGEBYSCORE", P .. "tails", "-inf", now, "LIMIT", 0, limit)) do
    local rec = stream_in("tails", stream)
    if rec then
      redis.call("ZADD", P .. "tails", now + lease, stream)
      out[#out + 1] = {stream, rec.mode, rec.next_seq, rec.hint, rec.hint_seq, app_label(rec.app)}
    end
  end
  return out
end

if op == "adopt" then
  -- stream, retry ("" when the listing answered: then pairs of SeqNo and file name follow): the
  -- files of a stream's tail that no callback announced become segments found in COS, every
  -- callback of theirs lost (lifecycle.found_in_cos). A listing that failed is claimable again
  -- after `retry` seconds. Returns, per segment made, its SeqNo and the events lost.
  local stream, retry = ARGV[11], ARGV[12]
  if redis.call("ZSCORE", P .. "tails", stream) == false then return {} end  -- not claimed
  local raw = redis.call("HGET", P .. "sr", stream)
  if retry ~= "" then
    if raw then redis.call("ZADD", P .. "tails", now + tonumber(retry), stream) end
    return {}
  end
  redis.call("ZREM", P .. "tails", stream)
  if not raw then return {} end
  local rec = unpack_stream(raw)
  local out, evicted = {}, {}
  for i = 13, #ARGV, 2 do  -- (in SeqNo order: stores/redis.py sorts them)
    local seq = tonumber(ARGV[i])
    local key = stream .. SEP .. string.format("%d", seq)
    if seq >= rec.next_seq and redis.call("EXISTS", P .. "s:" .. key) == 0 then
      -- A file of SeqNo n says 0..n-1 exist: those between with no file are expected too.
      local low = rec.next_seq
      if low <= seq - MAX_GAP then low = seq - MAX_GAP end
      expect(stream, low, seq, rec.mode, rec.app, evicted)
      local seg = insert(key, rec.mode, rec.app, evicted)
      local seen, lost = found_in_cos(0)
      seg.seen = seen
      seg.flags = bor(seg.flags, lshift(band(lost, bor(SEEN_COMPLETED, SEEN_UPLOADED)), FLAG_LOST_SHIFT),
        FLAG_LOST_START)
      if CHECK_IN_COS then seg.file = ARGV[i + 1] end
      settle_segment(key, seg, nil)
      save(key, seg)
      if seq + 1 > rec.next_seq then rec.next_seq = seq + 1 end
      out[#out + 1] = {seq, lost}
    end
  end
  save_stream(stream, rec)
  return {out, evicted, app_label(rec.app)}
end

if op == "nostart" then
  -- BizIDs whose start callbacks are never sent (lifecycle.expects_start): replaces the set.
  redis.call("DEL", P .. "ns")
  for i = 11, #ARGV do redis.call("HSET", P .. "ns", ARGV[i], "1") end
  return #ARGV - 10
end

if op == "resolve" then
  -- key, answer ("found", "not_found", "error"), then the lifecycle.Backoff (first, most,
  -- jitter; all "" for an answer never retried). Returns the retry's delay as a string (a
  -- float reply would be truncated), "-1" for none.
  local key, answer = ARGV[11], ARGV[12]
  local raw = redis.call("GET", P .. "s:" .. key)
  if not raw then
    redis.call("ZREM", P .. "chk", key)
    return {-2}
  end
  local seg = unpack_seg(raw)
  local before = check_of(seg)
  if not claimable(before) then return {-2} end
  local seen, lost, check = apply_answer(seg.seen, answer)
  if lost ~= 0 then
    seg.seen = seen
    seg.flags = bor(band(seg.flags, bnot(bor(LOST_MASK, FLAG_LOST_START))),
      lshift(band(lost, bor(SEEN_COMPLETED, SEEN_UPLOADED)), FLAG_LOST_SHIFT))
    if has(lost, SEEN_STARTED) then seg.flags = bor(seg.flags, FLAG_LOST_START) end
  end
  set_check(key, seg, check)
  local entered, orphaned = settle_segment(key, seg, seg.state)
  local retry = -1
  if ARGV[13] ~= "" and check_of(seg) == CHECK_UNCONFIRMED then
    local _, passed = deadline_passed(seg.state, seg.seen, seg.r_first, seg.r_complete)
    retry = retry_after(answer, now - (passed or now), tonumber(ARGV[15]), tonumber(ARGV[13]),
      tonumber(ARGV[14]))
  end
  if retry >= 0 then
    redis.call("ZADD", P .. "chk", now + retry, key)  -- claimed again then, by one replica
  else
    redis.call("ZREM", P .. "chk", key)
  end
  local confirmed = confirms(before, check_of(seg)) and seg.state or -1  -- reported anew
  save(key, seg)
  return {entered, lost, check_of(seg), orphaned, app_label(seg.app), string.format("%.17g", retry), confirmed}
end

if op == "rule" then
  -- For tests only, and it changes nothing in Redis: runs the rule function named ARGV[11]
  -- with the arguments that follow ("" is nil, "true"/"false" booleans, numbers as numbers,
  -- anything else a string) and returns what it returns, each as a string ("" for nil).
  local fn = RULES[ARGV[11]]
  if not fn then return redis.error_reply("unknown rule " .. tostring(ARGV[11])) end
  local args, n = {}, #ARGV - 11
  for i = 1, n do
    local a = ARGV[11 + i]
    if a == "" then args[i] = nil
    elseif a == "true" or a == "false" then args[i] = a == "true"
    else args[i] = tonumber(a) or a end
  end
  local out = {n = 0}
  local function keep(...)
    out.n = select("#", ...)
    for i = 1, out.n do out[i] = select(i, ...) end
  end
  keep(fn(unpack(args, 1, n)))
  local reply = {}
  for i = 1, out.n do
    local v = out[i]
    if v == nil then reply[i] = ""
    elseif type(v) == "number" then reply[i] = string.format("%.17g", v)
    else reply[i] = tostring(v) end
  end
  return reply
end

if op == "blind" then
  -- window start, end, after, count, upto: marks the segments lifecycle.blind_marks picks among
  -- `count` of the `age` index after place `after`, up to place `upto` ("": the last place now,
  -- returned). The caller pages through it (one script never holds Redis long); a segment's
  -- place never changes, so no segment is passed over or seen twice while the index moves.
  local w_end = tonumber(ARGV[12])
  local window, after, count = ARGV[11] .. " " .. ARGV[12], ARGV[13], tonumber(ARGV[14])
  local upto = ARGV[15]
  if upto == "" then upto = redis.call("GET", P .. "seq") or "0" end
  local w_start = tonumber(ARGV[11])
  local latest = redis.call("GET", P .. "lbw")
  if not latest or tonumber(string.match(latest, "%S+ (%S+)")) < w_end then
    redis.call("SET", P .. "lbw", window)  -- segments created from now on are held against it
  end
  local page = redis.call("ZRANGEBYSCORE", P .. "age", "(" .. after, upto, "WITHSCORES", "LIMIT", 0, count)
  local marked, last = 0, after
  for i = 1, #page, 2 do
    local key = page[i]
    last = page[i + 1]
    local raw = redis.call("GET", P .. "s:" .. key)
    if raw then
      local seg = unpack_seg(raw)
      if blind_marks(seg.state, seg.expires - RETENTION, w_end) then
        redis.call("HSET", P .. "bw", key, window)
        marked = marked + 1
      end
      if start_blind_marks(seg.seen, seg.state, seg.r_first, w_start, w_end) then
        redis.call("HSET", P .. "sb", key, window)
      end
    end
  end
  return {marked, #page / 2, last, upto}
end

if op == "mark" then
  -- key, window start, end: marks one live segment (lifecycle.can_mark); 1 if it was marked.
  local key, window = ARGV[11], ARGV[12] .. " " .. ARGV[13]
  local raw = redis.call("GET", P .. "s:" .. key)
  if not (raw and can_mark(unpack_seg(raw).state)) then return 0 end
  redis.call("HSET", P .. "bw", key, window)
  return 1
end

if op == "apps" then
  -- BizIDs known in advance; how many of them overflowed into "other" (counted as a record does)
  local overflow = 0
  for i = 11, #ARGV do
    local _, o = app_index(ARGV[i])
    overflow = overflow + o
  end
  return overflow
end

return redis.error_reply("unknown op " .. tostring(op))
