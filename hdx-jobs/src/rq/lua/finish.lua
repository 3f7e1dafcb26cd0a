-- Record a successful execution [5.5], atomically, only if this execution still holds its lease
-- (maintenance may have failed or retried it after a long outage; then nothing is written).
--
-- ARGV: id, execution_id, origin, worker, ts, started_f, ended_f, default_result_ttl,
--       return_value_b64 ('' for None), duration, next_current_job, func, duration_bucket
-- (ts, started_f and ended_f are the worker's clock, for display; the registry expiry uses the
-- server's clock)
-- Returns 1 when recorded, 0 when the lease was lost.
local id, x, origin, w = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now_s, ts = math.floor(server_now()), ARGV[5]
local started_f, ended_f = ARGV[6], ARGV[7]
local ret = ARGV[9]

if not lease_entry(id, x, origin) then return 0 end
local jk = job_key(id)
local result_ttl = hget_num(jk, 'result_ttl') or tonumber(ARGV[8])
end_execution(id, x, origin)
worker_job_done(w, id, ARGV[11], 'successful_job_count', ARGV[10])
count_job('finished', origin, ARGV[12], ARGV[10], ARGV[13], now_s)
if redis.call('EXISTS', jk) == 0 then return 1 end

redis.call('HSET', jk, 'status', 'finished', 'ended_at', ts, 'last_heartbeat', ts)
if result_ttl == 0 then
  release_dependents(id, ts, false)
  delete_job(id)
  return 1
end
local extra = {}
if ret ~= '' then extra = {'return_value', ret} end
for _, v in ipairs({'execution_id', x, 'execution_started_at', started_f, 'execution_ended_at', ended_f}) do
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
expire_job(id, result_ttl)
release_dependents(id, ts, false)
return 1
