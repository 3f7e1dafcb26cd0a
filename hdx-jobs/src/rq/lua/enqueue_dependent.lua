-- Enqueue a job that depends on others [5.15], atomically: deferred while any dependency is
-- unfinished, else queued as usual.
-- ARGV: id, queue, ts, now_s, at_front (1/0), ttl (0 = none), n_fields, field, value, ...,
--       dependency ids...
-- Returns 'queued' or 'deferred'.
local id, q, ts, now_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local at_front, ttl, n_fields = ARGV[5] == '1', tonumber(ARGV[6]), tonumber(ARGV[7])
local jk = job_key(id)
local fields = {}
for i = 8, 7 + n_fields * 2 do table.insert(fields, ARGV[i]) end
local deps = {}
for i = 8 + n_fields * 2, #ARGV do table.insert(deps, ARGV[i]) end

redis.call('SADD', 'rq:queues', 'rq:queue:' .. q)
redis.call('HSET', jk, unpack(fields))
local pending = false
for _, d in ipairs(deps) do
  if redis.call('HGET', job_key(d), 'status') ~= 'finished' then pending = true end
end
local result = 'queued'
if pending then
  redis.call('HSET', jk, 'status', 'deferred')
  redis.call('ZADD', 'rq:deferred:' .. q, now_s, id)
  for _, d in ipairs(deps) do
    redis.call('SADD', job_key(d) .. ':dependents', id)
    redis.call('SADD', 'rq:job::' .. id .. ':dependencies', d)
  end
  result = 'deferred'
else
  push_job(id, q, ts, at_front)
end
if ttl > 0 then expire_job(id, ttl) end
return result
