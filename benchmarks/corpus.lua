-- wrk script: cycle through a pre-signed corpus of GME callbacks.
--
-- The corpus comes from `gme-recwatch simulate --write-corpus FILE`: one request per line,
-- "<Signature>\t<body>". Every request is formatted once, in init(), so the measured loop
-- only hands out prepared strings. With several wrk threads, thread i takes lines i, i+n, ...
-- so no two threads send the same callback.
--
--   wrk -t1 -c32 -d10s -s benchmarks/corpus.lua http://127.0.0.1:18080/callback -- corpus.tsv 1
--
-- done() prints one line "RESULT {json}" with counts and latency percentiles (microseconds).

local next_id = 0

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end

function init(args)
  local path = args[1] or "corpus.tsv"
  local nthreads = tonumber(args[2] or "1")
  local id = thread_id or 0
  prepared = {}
  local n = 0
  local fh = assert(io.open(path, "r"))
  for line in fh:lines() do
    if n % nthreads == id then
      local tab = string.find(line, "\t", 1, true)
      local sig, body = string.sub(line, 1, tab - 1), string.sub(line, tab + 1)
      prepared[#prepared + 1] = wrk.format("POST", wrk.path,
        { ["Signature"] = sig, ["Content-Type"] = "application/json" }, body)
    end
    n = n + 1
  end
  fh:close()
  cursor = 0
end

function request()
  cursor = cursor + 1
  if cursor > #prepared then cursor = 1 end
  return prepared[cursor]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,'
    .. '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
    .. '"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
