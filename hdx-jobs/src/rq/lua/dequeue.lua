-- Take up to N jobs off the worker's queues, in priority order, and start them, atomically
-- [5.2 + 5.3 in one step]: a job is never popped without being leased in rq:wip, so a worker
-- that dies at any moment leaves nothing in limbo (Python RQ's BLPOP path can lose a job there).
--
-- ARGV: worker, now_f, ts, monitoring_interval, lease_grace, default_timeout, max_jobs,
--       n_queues, missing_hash_exc, bare_entry (1: lease as the bare job id, which RQ 1.x
--       readers list too; 0: as RQ 2's `<id>:<execution id>`), queue..., execution_id...
--       (max_jobs of them)
-- (now_f and ts are the worker's clock, for display; leases use the server's clock)
-- Returns: { {queue, id, execution_id, {field, value, ...}, attempt}, ... } with the fields a
-- worker runs a job from (data, origin, timeout, created_at) as they were before the start;
-- a job whose hash is gone comes back with execution_id '' after being recorded as failed. Returns the string
-- 'suspended' and takes nothing while `rq:suspended` exists.
local w = ARGV[1]
local now_s = math.floor(server_now())
local now_f = ARGV[2]
local ts = ARGV[3]
local interval = tonumber(ARGV[4])
local grace = tonumber(ARGV[5])
local default_timeout = tonumber(ARGV[6])
local max_jobs = tonumber(ARGV[7])
local n_queues = tonumber(ARGV[8])
local missing_exc = ARGV[9]
local bare_entry = ARGV[10] == '1'
local first_x = 11 + n_queues

if redis.call('EXISTS', 'rq:suspended') == 1 then return 'suspended' end

-- What the script and the worker read of a job hash: not the whole of it (descriptions,
-- metadata, results settings are not needed to run it, and cost Redis and the worker a copy).
local READ = {'data', 'origin', 'timeout', 'created_at', 'hdx_attempt', 'hdx_lease', 'status'}
local FOR_WORKER = 4 -- the first four go back to the worker

local out = {}
local started = 0
for qi = 1, n_queues do
  local q = ARGV[10 + qi]
  while started < max_jobs do
    local id = redis.call('LPOP', 'rq:queue:' .. q)
    if not id then break end
    local jk = job_key(id)
    local values = redis.call('HMGET', jk, unpack(READ))
    local job, flat = {}, {}
    for i, field in ipairs(READ) do
      local v = values[i]
      if v then
        job[field] = v
        if i <= FOR_WORKER then
          table.insert(flat, field)
          table.insert(flat, v)
        end
      end
    end
    if next(job) == nil and redis.call('EXISTS', jk) == 0 then
      -- The hash expired (ttl) or was deleted while queued: nothing can run. Record it where
      -- operators look for failures instead of dropping it silently.
      redis.call('ZADD', 'rq:failed:' .. q, now_s + 31536000, id)
      add_result(id, '2', w, {'exc_string', missing_exc})
      redis.call('EXPIRE', 'rq:results:' .. id, 31536000)
      table.insert(out, {q, id, '', {}, 0})
    else
      started = started + 1
      local x = ARGV[first_x + started - 1]
      local origin = job['origin']
      if origin == nil or origin == '' then origin = q end
      local timeout = tonumber(job['timeout'] or '') or default_timeout
      local lease = interval
      if timeout > 0 and timeout < interval then lease = timeout end
      lease = lease + grace
      local ek = 'rq:execution:' .. id .. ':' .. x
      redis.call('HSET', ek, 'id', x, 'created_at', now_f, 'last_heartbeat', now_f, 'worker_name', w)
      redis.call('EXPIRE', ek, lease)
      redis.call('ZADD', 'rq:executions:' .. id, now_s + lease + 60, x)
      redis.call('EXPIRE', 'rq:executions:' .. id, lease + 60)
      local attempt = (tonumber(job['hdx_attempt'] or '') or 0) + 1
      if bare_entry then
        redis.call('ZADD', 'rq:wip:' .. origin, now_s + lease, id)
        redis.call('HSET', jk, 'status', 'started', 'started_at', ts, 'last_heartbeat', ts,
                   'worker_name', w, 'hdx_attempt', attempt, 'hdx_lease', x)
      else
        redis.call('ZADD', 'rq:wip:' .. origin, now_s + lease, id .. ':' .. x)
        redis.call('HSET', jk, 'status', 'started', 'started_at', ts, 'last_heartbeat', ts,
                   'worker_name', w, 'hdx_attempt', attempt)
        if job['hdx_lease'] then redis.call('HDEL', jk, 'hdx_lease') end
      end
      redis.call('PERSIST', jk)
      -- The fields the worker needs as they were read, and the new attempt number: the worker
      -- applies the writes above itself rather than have Redis read the hash a second time.
      table.insert(out, {q, id, x, flat, attempt})
    end
  end
  if started >= max_jobs then break end
end

if started > 0 then
  local wk = 'rq:worker:' .. w
  redis.call('HINCRBY', wk, 'hdx_running', started)
  redis.call('HSET', wk, 'state', 'busy', 'last_heartbeat', ts)
  redis.call('HSETNX', wk, 'current_job', out[#out][2])
end
return out
