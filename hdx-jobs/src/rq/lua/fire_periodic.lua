-- Fire one period of a periodic job, exactly once: only if `due` is still the job's next due
-- time (compare-and-set), enqueue the period's job (unless a job of that id exists already),
-- and move the job's next due time to `next`. An empty job id skips the period (misfire skip).
-- ARGV: periodic id, due, next, queue, job id, metrics field, n_fields, field, value, ...
-- Returns 1 when this call moved the job on, 0 when another scheduler did.
local id, due, nxt, q, jid = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local score = redis.call('ZSCORE', 'hdx:periodic:next', id)
if not score or tonumber(score) ~= due then return 0 end
if redis.call('HEXISTS', 'hdx:periodic:jobs', id) == 0 then
  redis.call('ZREM', 'hdx:periodic:next', id)
  return 0
end
if jid ~= '' and redis.call('EXISTS', job_key(jid)) == 0 then
  local fields = {}
  for i = 8, 7 + tonumber(ARGV[7]) * 2 do table.insert(fields, ARGV[i]) end
  redis.call('SADD', 'rq:queues', 'rq:queue:' .. q)
  redis.call('HSET', job_key(jid), unpack(fields))
  redis.call('RPUSH', 'rq:queue:' .. q, jid)
  redis.call('HINCRBY', 'hdx:metrics:jobs', ARGV[6], 1)
end
redis.call('ZADD', 'hdx:periodic:next', nxt, id)
return 1
