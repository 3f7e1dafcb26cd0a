-- A worker's heartbeat [5.4, 5.10]: refresh its hash and the lease of every job it runs.
--
-- ARGV: worker, now_f, ts, worker_key_ttl, suspended (1/0), n_jobs, then per job:
--       id, execution_id, origin, lease
-- (now_f and ts are the worker's clock, for display; leases use the server's clock)
-- Returns { hash_was_missing (0/1), {lost `<id>:<execution id>`, ...} }. A missing hash means it expired or
-- Redis lost it: the caller re-registers. A lost lease means maintenance already failed or
-- retried that job: the caller stops running it.
local w, now_s, now_f, ts = ARGV[1], math.floor(server_now()), ARGV[2], ARGV[3]
local wk = 'rq:worker:' .. w
local missing = redis.call('EXISTS', wk) == 0
local lost = {}
if not missing then
  local state = 'idle'
  if ARGV[5] == '1' then
    state = 'suspended'
  elseif (hget_num(wk, 'hdx_running') or 0) > 0 then
    state = 'busy'
  end
  redis.call('HSET', wk, 'last_heartbeat', ts, 'state', state)
  redis.call('EXPIRE', wk, tonumber(ARGV[4]))
end
local n = tonumber(ARGV[6])
for i = 0, n - 1 do
  local id, x, origin = ARGV[7 + i * 4], ARGV[8 + i * 4], ARGV[9 + i * 4]
  local lease = tonumber(ARGV[10 + i * 4])
  local member = lease_entry(id, x, origin)
  if member then
    redis.call('ZADD', 'rq:wip:' .. origin, 'XX', now_s + lease, member)
    local ek = 'rq:execution:' .. id .. ':' .. x
    redis.call('HSET', ek, 'last_heartbeat', now_f)
    redis.call('EXPIRE', ek, lease)
    redis.call('ZADD', 'rq:executions:' .. id, now_s + lease + 60, x)
    redis.call('EXPIRE', 'rq:executions:' .. id, lease + 60)
    if redis.call('EXISTS', job_key(id)) == 1 then
      redis.call('HSET', job_key(id), 'last_heartbeat', ts)
    end
  else
    table.insert(lost, id .. ':' .. x)
  end
end
if missing then return {1, lost} end
return {0, lost}
