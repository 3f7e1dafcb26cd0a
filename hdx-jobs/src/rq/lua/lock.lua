-- Acquire or refresh a lock held under a name (RQ 2.10+ scheduler lock semantics).
-- ARGV: key, name, ttl.  Returns 1 when held by `name` afterwards.
local v = redis.call('GET', ARGV[1])
if not v then
  redis.call('SET', ARGV[1], ARGV[2], 'EX', ARGV[3])
  return 1
elseif v == ARGV[2] then
  redis.call('EXPIRE', ARGV[1], ARGV[3])
  return 1
end
return 0
