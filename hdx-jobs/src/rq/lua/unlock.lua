-- Release a lock only if `name` still holds it.  ARGV: key, name.
if redis.call('GET', ARGV[1]) == ARGV[2] then return redis.call('DEL', ARGV[1]) end
return 0
