-- Cancel a job [5.13]: out of its queue and registry, into the canceled registry. A running
-- job keeps running (stop it with the stop-job command).
-- ARGV: id, now_s.  Returns 0 when the job does not exist.
local id, now_s = ARGV[1], ARGV[2]
local jk = job_key(id)
local origin = redis.call('HGET', jk, 'origin')
if not origin then return 0 end
local status = redis.call('HGET', jk, 'status')
redis.call('HSET', jk, 'status', 'canceled')
redis.call('LREM', 'rq:queue:' .. origin, 1, id)
local registry = ({finished = 'finished', deferred = 'deferred', scheduled = 'scheduled',
                   failed = 'failed', stopped = 'failed'})[status]
if registry then redis.call('ZREM', 'rq:' .. registry .. ':' .. origin, id) end
if status == 'started' then
  for _, x in ipairs(redis.call('ZRANGE', 'rq:executions:' .. id, 0, -1)) do
    redis.call('ZREM', 'rq:wip:' .. origin, id .. ':' .. x)
  end
  redis.call('ZREM', 'rq:wip:' .. origin, id)
  redis.call('HDEL', jk, 'hdx_lease')
end
redis.call('ZADD', 'rq:canceled:' .. origin, now_s, id)
return 1
