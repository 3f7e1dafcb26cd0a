-- Put a job that a dead Python worker left in a queue's intermediate list back at the front of
-- its queue (RQ fails such jobs; it never started, so running it is the safe choice).
-- ARGV: queue, id, ts.  Returns 1 when moved.
local q, id, ts = ARGV[1], ARGV[2], ARGV[3]
if redis.call('LREM', 'rq:queue:' .. q .. ':intermediate', 1, id) == 0 then return 0 end
redis.call('DEL', 'rq:queue:' .. q .. ':intermediate:first_seen:' .. id)
if redis.call('EXISTS', job_key(id)) == 0 then return 0 end
push_job(id, q, ts, true)
return 1
