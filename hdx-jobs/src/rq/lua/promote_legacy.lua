-- Enqueue one due job of the rq-scheduler package's sorted set [5.17], once: only if its score
-- is still `score` (compare-and-set), then either drop it from the set or, for its periodic
-- jobs, re-add it at `next` with the updated (pickled) meta.
-- ARGV: id, score, ts, new_meta ('' to keep), next (-1: done)
-- Returns 1 when this call enqueued it.
local id, score, ts = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local zset = 'rq:scheduler:scheduled_jobs'
local current = redis.call('ZSCORE', zset, id)
if not current or tonumber(current) ~= score then return 0 end
local jk = job_key(id)
if redis.call('EXISTS', jk) == 0 then
  redis.call('ZREM', zset, id)
  return 0
end
if ARGV[4] ~= '' then redis.call('HSET', jk, 'meta', ARGV[4]) end
local origin = redis.call('HGET', jk, 'origin')
if not origin or origin == '' then origin = 'default' end
push_job(id, origin, ts, redis.call('HGET', jk, 'enqueue_at_front') == '1')
if tonumber(ARGV[5]) >= 0 then
  redis.call('ZADD', zset, ARGV[5], id)
else
  redis.call('ZREM', zset, id)
end
return 1
