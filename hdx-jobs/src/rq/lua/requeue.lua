-- Requeue a failed (or stopped) job [5.12]: refused (0) unless it is in its failed registry.
-- ARGV: id, ts, empty_exc_info (zlib of ''), at_front (1/0)
local id, ts = ARGV[1], ARGV[2]
local jk = job_key(id)
local origin = redis.call('HGET', jk, 'origin')
if not origin then return 0 end
if redis.call('ZREM', 'rq:failed:' .. origin, id) == 0 then return 0 end
redis.call('HSET', jk, 'started_at', '', 'ended_at', '', 'exc_info', ARGV[3])
push_job(id, origin, ts, ARGV[4] == '1')
return 1
