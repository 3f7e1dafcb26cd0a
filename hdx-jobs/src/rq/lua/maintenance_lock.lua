-- Take a queue's maintenance lock rq:clean_registries:<q> (docs/rq-protocol.md §5.11).
-- ARGV: lock key, holder, ttl (ours), rq_ttl (Python RQ's 899), stale_after.
-- Returns 1 when the caller holds the lock afterwards, 0 when another cleaner does.
--
-- Python RQ takes it with SET NX EX 899 and deletes it after its round, which lasts
-- milliseconds; so does a cleaner of ours, with a short ttl.  A cleaner that dies mid-round
-- leaves the lock behind, which would stop every other cleaner (and so the recovery of a dead
-- worker's jobs) until it expires.  Ours expire within `ttl`; a lock with a longer remaining
-- life than ours was taken by RQ, and when that life shows it was taken more than `stale_after`
-- seconds ago (or it never expires), its holder died mid-round: take it over.
local ttl = redis.call('TTL', ARGV[1])
local ours = tonumber(ARGV[3])
if ttl == -2 or ttl == -1 or (ttl > ours and ttl < tonumber(ARGV[4]) - tonumber(ARGV[5])) then
  redis.call('SET', ARGV[1], ARGV[2], 'EX', ours)
  return 1
end
return 0
