-- Move due jobs from a queue's scheduled registry into the queue [5.16]. ZREM decides who moves
-- a job, so two schedulers racing on one queue can never enqueue it twice.
--
-- ARGV: queue, ts, limit.  Returns the number of jobs enqueued. Due means due on the server's
-- clock (ts, the enqueue time written, is the scheduler's).
local q, now_s, ts, limit = ARGV[1], server_now(), ARGV[2], ARGV[3]
local moved = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', 'rq:scheduled:' .. q, 0, now_s, 'LIMIT', 0, limit)) do
  if redis.call('ZREM', 'rq:scheduled:' .. q, id) == 1 then
    local jk = job_key(id)
    if redis.call('EXISTS', jk) == 1 then
      local origin = redis.call('HGET', jk, 'origin')
      if origin == false or origin == '' then origin = q end
      local ended = redis.call('HGET', jk, 'ended_at')
      local at_front = redis.call('HGET', jk, 'enqueue_at_front') == '1'
        or (redis.call('HGET', jk, 'enqueue_at_front_on_retry') == '1' and ended and ended ~= '')
      push_job(id, origin, ts, at_front)
      moved = moved + 1
    end
  end
end
return moved
