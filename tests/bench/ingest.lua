-- ingest.lua: wrk script for bench-server's event ingestion: every request is a batch of
-- BATCH metrics events of VALUES values each, with sequence numbers unique across threads.
local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  batch = tonumber(os.getenv("BATCH") or "100")
  nvalues = tonumber(os.getenv("VALUES") or "20")
  worker = os.getenv("WORKER_ID")
  keys = {}
  for k = 1, nvalues do keys[k] = string.format('"m%02d": %d.%d', k, k, k) end
  values = "{" .. table.concat(keys, ", ") .. "}"
end

function request()
  local events = {}
  for i = 1, batch do
    counter = counter + 1
    local seq = tid * 1000000000 + counter
    events[i] = string.format('{"seq": %d, "type": "metrics", "data": {"iteration": %d, "values": %s}}',
                              seq, seq, values)
  end
  wrk.body = string.format('{"worker_id": "%s", "events": [%s]}', worker, table.concat(events, ","))
  return wrk.format()
end
