-- Appends one run's events to the stream, once: the marker key records that the run's events
-- are in, so a retry (after a timeout that hid a success, or a failure after the push) appends
-- nothing and gets the entry ids of the first push back.
-- KEYS[1] the stream, KEYS[2] the run's marker
-- ARGV[1] MAXLEN (approximate), ARGV[2] marker TTL in seconds, then event_type, body pairs
-- Returns {1, ids} when appended now, {0, ids} when an earlier call did.
local done = redis.call('GET', KEYS[2])
if done then
  return {0, done}
end
local ids = {}
for i = 3, #ARGV, 2 do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    'event_type', ARGV[i], 'body', ARGV[i + 1])
end
local joined = table.concat(ids, ' ')
redis.call('SET', KEYS[2], joined, 'EX', ARGV[2])
return {1, joined}
