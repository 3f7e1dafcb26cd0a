-- Empty a queue: delete its waiting jobs and the list, in batches, like Python's Queue.empty().
-- ARGV: queue.  Returns the number of jobs removed.
local qk = 'rq:queue:' .. ARGV[1]
local count = 0
while true do
  local ids = redis.call('LRANGE', qk, 0, 999)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    redis.call('DEL', job_key(id), job_key(id) .. ':dependents')
  end
  count = count + #ids
  redis.call('LTRIM', qk, #ids, -1)
end
redis.call('DEL', qk)
return count
