-- wrk (Debian's package: C, epoll, LuaJIT) script for scripts/bench-http.ts: H2 updates of N blocks
-- over N keep-alive connections, each block on its own canvas, updated as its own user, always from
-- the version its last answer gave (as a client does), at most one request in flight per block.
-- wrk's threads share the blocks out (block k to thread k mod T); a thread's request goes out on
-- whichever of its connections is free, and its answer is matched to its block by X-Request-Id
-- ("<block>.<n>"), which the server echoes.
--
-- In:  POTENTIA_WRK_CONNS   a file of lines "canvas_id<TAB>token<TAB>block_id<TAB>version"
--      POTENTIA_WRK_THREADS the -t given to wrk
--      POTENTIA_WRK_PREFIX  client_op_id prefix, unique per run (a resent one is answered from the log)
-- Out: POTENTIA_WRK_OUT     JSON: ok, failed (by "status code"), socket errors, seconds, and the
--                           latency distribution (µs quantiles)
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("index", #threads)
end

function init(args)
  local count = tonumber(os.getenv("POTENTIA_WRK_THREADS"))
  blocks, free = {}, {}
  local k = 0
  for line in io.lines(os.getenv("POTENTIA_WRK_CONNS")) do
    k = k + 1
    if (k - 1) % count == index - 1 then
      local c, t, b, v = line:match("^(%S+)\t(%S+)\t(%S+)\t(%d+)$")
      table.insert(blocks, { id = b, version = tonumber(v), path = "/api/v1/canvas/" .. c .. "/mutate",
        authorization = "Bearer " .. t })
      table.insert(free, #blocks)
    end
  end
  prefix = os.getenv("POTENTIA_WRK_PREFIX") .. "-" .. index .. "-"
  n, ok, failed = 0, 0, {}
  -- wrk calls the first thread's request() once before the run, to count the requests it returns;
  -- that one is never sent, and takes no block
  counting = index == 1
end

function request()
  -- a connection asks only with no request in flight, so some block is free, unless a connection
  -- was lost with a request on it: wrk reconnects and asks again, and which block that request was
  -- for cannot be told (its answer never comes; wrk gives the script no error callback)
  local i = counting and free[#free] or table.remove(free)
  counting = false
  if not i then error("a connection was lost with a request in flight (wrk's socket errors): run the benchmark again") end
  local b = blocks[i]
  n = n + 1
  return wrk.format("POST", b.path, {
    ["Authorization"] = b.authorization, ["Content-Type"] = "application/json", ["X-Request-Id"] = i .. "." .. n,
  }, string.format('{"action":"update","block_id":"%s","client_op_id":"%s%d","base_version":%d,"patch":{"content":{"n":%d}}}',
    b.id, prefix, n, b.version, n))
end

function response(status, headers, body)
  local id = headers["X-Request-Id"] or headers["x-request-id"]
  local i = id and tonumber(id:match("^(%d+)%."))
  if not i or not blocks[i] then error("an answer without the X-Request-Id sent (" .. status .. "): " .. body:sub(1, 100)) end
  -- a success's version, or a conflict's current one: the next request is made on it
  local v = body:match('"version": ?(%d+)')
  if v then blocks[i].version = tonumber(v) end
  table.insert(free, i)
  if status == 200 then
    ok = ok + 1
  else
    local kind = status .. " " .. (body:match('"code": ?"([^"]*)"') or body:sub(1, 60))
    failed[kind] = (failed[kind] or 0) + 1
  end
end

function done(summary, latency, requests)
  local out = io.open(os.getenv("POTENTIA_WRK_OUT"), "w")
  local oks, failures = 0, {}
  for _, t in ipairs(threads) do
    oks = oks + t:get("ok")
    for kind, c in pairs(t:get("failed")) do
      table.insert(failures, string.format('["%s",%d]', (kind:gsub('[%c\\"]', "?")), c))
    end
  end
  -- the latency distribution as evenly spaced quantiles (this wrk's stats give percentiles, not their
  -- histogram): one per request up to 2000 (exact), else 2000 (each call scans the histogram, and
  -- its CPU is counted as wrk's); a run of `npm run bench` (~2,000-2,500 requests) weighs about
  -- as much as another when the bench merges rounds
  local quantiles = {}
  local points = math.min(summary.requests, 2000)
  for k = 1, points do
    table.insert(quantiles, tostring(latency:percentile(100 * (k - 0.5) / points)))
  end
  local e = summary.errors
  out:write(string.format('{"ok":%d,"failed":[%s],"socketErrors":%d,"seconds":%f,"latency":[%s]}',
    oks, table.concat(failures, ","), e.connect + e.read + e.write + e.timeout, summary.duration / 1e6, table.concat(quantiles, ",")))
  out:close()
end
