-- Record a failed execution [5.6], or retry it when it may be and retries are left [5.7],
-- atomically and only while the execution still holds its lease.
--
-- mode 'failed': the task failed or timed out; 'stopped': a stop-job command (no retry);
-- 'abandoned': maintenance found the lease expired (only if its deadline has passed, so a
-- lease refreshed meanwhile is left alone; the worker name is ''); 'interrupted': the worker's
-- shutdown timeout cut the run short, so the job goes back to the front of its queue with its
-- retries untouched (it did nothing wrong).
--
-- ARGV: id, execution_id ('' for an RQ 1.13 member), origin, worker, ts, started_f,
--       ended_f, exc_string_b64, mode, allow_retry (1/0), min_wait_s, duration, next_current_job,
--       func, duration_bucket ('' when the run was not timed, e.g. abandoned)
-- (ts, started_f and ended_f are the worker's clock, for display; the lease check, the retry
-- time and registry expiries use the server's clock)
-- Returns 'failed' | 'stopped' | 'retried' | 'scheduled' | 'requeued' | 'lost' | 'alive' | 'gone'.
local id, x, origin, w = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now_f = server_now()
local now_s, ts = math.floor(now_f), ARGV[5]
local started_f, ended_f, exc = ARGV[6], ARGV[7], ARGV[8]
local mode, allow_retry, min_wait = ARGV[9], ARGV[10] == '1', tonumber(ARGV[11])

local member = lease_entry(id, x, origin)
if not member then return 'lost' end
local score = redis.call('ZSCORE', 'rq:wip:' .. origin, member)
if mode == 'abandoned' then
  local deadline = tonumber(score)
  if score == 'inf' or deadline == nil or deadline > now_s then return 'alive' end
end

local jk = job_key(id)
local func, bucket = ARGV[14], ARGV[15]
end_execution(id, x, origin)
if mode == 'interrupted' then
  worker_job_done(w, id, ARGV[13], 'hdx_interrupted_job_count', ARGV[12])
  if redis.call('EXISTS', jk) == 0 then return 'gone' end
  push_job(id, origin, ts, true)
  count_job('interrupted', origin, func, ARGV[12], '', now_s)
  return 'requeued'
end
worker_job_done(w, id, ARGV[13], 'failed_job_count', ARGV[12])
if redis.call('EXISTS', jk) == 0 then return 'gone' end

local retries = hget_num(jk, 'retries_left') or 0
if mode ~= 'stopped' and allow_retry and retries > 0 then
  local wait = 0
  local ok, intervals = pcall(cjson.decode, redis.call('HGET', jk, 'retry_intervals') or '[]')
  if ok and type(intervals) == 'table' and #intervals > 0 then
    wait = tonumber(intervals[math.max(#intervals - retries, 0) + 1]) or 0
  end
  if min_wait > wait then wait = min_wait end
  redis.call('HSET', jk, 'retries_left', retries - 1, 'ended_at', ts)
  local result
  if wait > 0 then
    redis.call('SADD', 'rq:queues', 'rq:queue:' .. origin)
    redis.call('HSET', jk, 'status', 'scheduled')
    -- Rounded up, so the wait is never shorter than asked (RQ truncates).
    local due = math.ceil(now_f + wait)
    redis.call('ZADD', 'rq:scheduled:' .. origin, due, id)
    result = 'scheduled'
  else
    push_job(id, origin, ts, redis.call('HGET', jk, 'enqueue_at_front_on_retry') == '1')
    result = 'retried'
  end
  local ttl = hget_num(jk, 'ttl')
  if ttl and ttl > 0 then expire_job(id, ttl) end
  count_job(mode == 'abandoned' and 'abandoned' or 'retried', origin, func, ARGV[12], bucket, now_s)
  return result
end

local status = 'failed'
if mode == 'stopped' then status = 'stopped' end
redis.call('HSET', jk, 'status', status, 'ended_at', ts)
local failure_ttl_field = hget_num(jk, 'failure_ttl')
local failure_ttl = failure_ttl_field or 31536000
expire_job(id, failure_ttl)
if failure_ttl == -1 then
  redis.call('ZADD', 'rq:failed:' .. origin, -1, id)
else
  redis.call('ZADD', 'rq:failed:' .. origin, now_s + failure_ttl, id)
end
local extra = {'exc_string', exc}
if x ~= '' then
  table.insert(extra, 'execution_id'); table.insert(extra, x)
  if started_f ~= '' then
    table.insert(extra, 'execution_started_at'); table.insert(extra, started_f)
  end
  table.insert(extra, 'execution_ended_at'); table.insert(extra, ended_f)
end
add_result(id, '2', w, extra)
if failure_ttl_field then
  if failure_ttl_field == -1 then
    redis.call('PERSIST', 'rq:results:' .. id)
  else
    redis.call('EXPIRE', 'rq:results:' .. id, failure_ttl_field)
  end
end
if mode ~= 'stopped' then release_dependents(id, ts, true) end
count_job(mode == 'failed' and 'failed' or mode, origin, func, ARGV[12], bucket, now_s)
return status
