-- Record successful executions [5.5], atomically, each only if its execution still holds its
-- lease (maintenance may have failed or retried it after a long outage; then nothing is written
-- for it). A worker sends together the successes that ended while its previous call was in
-- flight, so the worker hash, the metrics and the history are written once per call, not once
-- per job: Redis's time per job is what bounds a worker's throughput.
--
-- ARGV: worker, default_result_ttl, next_current_job (once these have ended), bare_entry (1:
--       this worker leases as the bare job id, so that layout is checked first), n, then n
--       groups of 10: id, execution_id, origin, ts, started_f, ended_f, return_value_b64 ('' for
--       None), duration, func, duration_bucket
-- (ts, started_f and ended_f are the worker's clock, for display; the registry expiry uses the
-- server's clock)
-- Returns a list with, per job in order, 1 when recorded and 0 when the lease was lost.
local w, default_ttl, next_current = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local bare_first = ARGV[4] == '1'
local n = tonumber(ARGV[5])
local now_s = math.floor(server_now())
local tally = new_tally()
local ended, ended_n, duration_sum = {}, 0, 0
local out = {}

local function num(v)
  if v == false or v == '' then return nil end
  return tonumber(v)
end

for i = 0, n - 1 do
  local a = 5 + i * 10
  local id, x, origin, ts = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local started_f, ended_f, ret = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local duration, func, bucket = ARGV[a + 8], ARGV[a + 9], ARGV[a + 10]
  local jk = job_key(id)
  local wip = 'rq:wip:' .. origin
  -- One read of the hash: the RQ 1 layout's lease, the result ttl, and whether it exists.
  local fields = redis.call('HMGET', jk, 'hdx_lease', 'result_ttl', 'status')
  local lease, ttl_field, status = fields[1], fields[2], fields[3]
  -- The lease, as lease_entry (common.lua) finds it, in this worker's layout first.
  local member = nil
  local bare = lease == x and x ~= ''
  if bare_first and bare and redis.call('ZSCORE', wip, id) then
    member = id
  elseif redis.call('ZSCORE', wip, id .. ':' .. x) then
    member = id .. ':' .. x
  elseif not bare_first and bare and redis.call('ZSCORE', wip, id) then
    member = id
  end
  if not member then
    out[i + 1] = 0
  else
    out[i + 1] = 1
    -- end_execution (common.lua), knowing the lease already.
    if bare then
      redis.call('ZREM', wip, id)
      redis.call('HDEL', jk, 'hdx_lease')
    end
    if member ~= id then redis.call('ZREM', wip, member) end
    redis.call('DEL', 'rq:execution:' .. id .. ':' .. x)
    redis.call('ZREM', 'rq:executions:' .. id, x)
    ended[id] = true
    ended_n = ended_n + 1
    duration_sum = duration_sum + (tonumber(duration) or 0)
    tally_job(tally, 'finished', origin, func, duration, bucket, now_s)

    local exists = status or lease or ttl_field or redis.call('EXISTS', jk) == 1
    if exists then
      local result_ttl = num(ttl_field) or default_ttl
      redis.call('HSET', jk, 'status', 'finished', 'ended_at', ts, 'last_heartbeat', ts)
      if result_ttl == 0 then
        release_dependents(id, ts, false)
        delete_job(id)
      else
        local extra = {}
        if ret ~= '' then extra = {'return_value', ret} end
        for _, v in ipairs({'execution_id', x, 'execution_started_at', started_f,
                            'execution_ended_at', ended_f}) do
          table.insert(extra, v)
        end
        add_result(id, '1', w, extra)
        if result_ttl == -1 then
          redis.call('PERSIST', 'rq:results:' .. id)
          redis.call('ZADD', 'rq:finished:' .. origin, '+inf', id)
        else
          redis.call('EXPIRE', 'rq:results:' .. id, result_ttl)
          redis.call('ZADD', 'rq:finished:' .. origin, now_s + result_ttl, id)
        end
        local waiting = release_dependents(id, ts, false)
        expire_job(id, result_ttl, waiting == 0)
      end
    end
  end
end

worker_jobs_done(w, ended, ended_n, next_current, 'successful_job_count', duration_sum)
write_tally(tally, now_s)
return out
