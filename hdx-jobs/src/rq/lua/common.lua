-- Helpers shared by every hdx-jobs script (this file is prepended to each one).
-- Keys and field meanings follow RQ 2.x: docs/rq-protocol.md, whose sections are in brackets.
-- Scripts build key names from ids, as RQ itself does; they assume one Redis server, not a
-- cluster (RQ has the same requirement).

local function job_key(id) return 'rq:job:' .. id end

-- Redis 5 and 6 refuse writes after TIME unless effects are replicated (always so in Redis 7).
if redis.replicate_commands then redis.replicate_commands() end

-- Now, in Unix seconds (with microseconds), on the Redis server's clock. Leases, their expiry,
-- retry and scheduling times are all measured on this one clock, so a worker host whose clock
-- is off can neither take over live jobs nor keep dead ones alive.
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- A numeric hash field, or nil when missing or empty.
local function hget_num(key, field)
  local v = redis.call('HGET', key, field)
  if v == false or v == '' then return nil end
  return tonumber(v)
end

-- The enqueue writes of [5.1] for a job whose hash exists already (promotion, retry,
-- requeue, released dependents).
local function push_job(id, origin, ts, at_front)
  redis.call('SADD', 'rq:queues', 'rq:queue:' .. origin)
  redis.call('HSET', job_key(id), 'status', 'queued', 'enqueued_at', ts)
  if at_front then
    redis.call('LPUSH', 'rq:queue:' .. origin, id)
  else
    redis.call('RPUSH', 'rq:queue:' .. origin, id)
  end
end

-- Expire (or persist, for -1) the job hash and its two helper sets [6]. `no_dependents`: the
-- caller knows the dependents set is gone (released), so it is not touched.
local function expire_job(id, ttl, no_dependents)
  local keys = {job_key(id), 'rq:job::' .. id .. ':dependencies'}
  if not no_dependents then table.insert(keys, job_key(id) .. ':dependents') end
  for _, k in ipairs(keys) do
    if ttl == -1 then redis.call('PERSIST', k) else redis.call('EXPIRE', k, ttl) end
  end
end

-- The started-registry entry through which execution `x` of job `id` holds its lease, or nil
-- once the lease is gone. An execution is leased either as RQ 2's `<id>:<x>` or, in the layout
-- RQ 1.x readers also understand, as the bare `<id>` with the job hash's `hdx_lease` naming the
-- execution (our own field; Python ignores it). `x` is '' for RQ 1.13 workers' bare entries.
local function lease_entry(id, x, origin)
  local wip = 'rq:wip:' .. origin
  if x == '' then
    if redis.call('ZSCORE', wip, id) then return id end
    return nil
  end
  local member = id .. ':' .. x
  if redis.call('ZSCORE', wip, member) then return member end
  if redis.call('ZSCORE', wip, id) and redis.call('HGET', job_key(id), 'hdx_lease') == x then
    return id
  end
  return nil
end

-- Forget one execution: its hash, its started-registry lease, its executions entry.
-- `x` is '' for a bare started-registry entry (an RQ 1.13 worker's, or ours in the RQ 1 layout,
-- whose execution `hdx_lease` names).
local function end_execution(id, x, origin)
  local wip = 'rq:wip:' .. origin
  local leased = redis.call('HGET', job_key(id), 'hdx_lease')
  if x == '' then x = leased or '' end
  if x == '' or leased == x then
    redis.call('ZREM', wip, id)
    if leased then redis.call('HDEL', job_key(id), 'hdx_lease') end
  end
  if x == '' then return end
  redis.call('DEL', 'rq:execution:' .. id .. ':' .. x)
  redis.call('ZREM', wip, id .. ':' .. x)
  redis.call('ZREM', 'rq:executions:' .. id, x)
end

-- Book finished jobs on their worker: counters, and state/current_job from the worker's
-- running count (`hdx_running`, our own field; Python ignores unknown fields). `ids` is a set
-- (id -> true) of the `n` jobs, `duration` their summed run time: a batch of outcomes costs the
-- worker hash a handful of commands, not a handful per job.
local function worker_jobs_done(w, ids, n, next_current, counter, duration)
  if w == '' or n == 0 then return end
  local wk = 'rq:worker:' .. w
  if redis.call('EXISTS', wk) == 0 then return end
  redis.call('HINCRBY', wk, counter, n)
  redis.call('HINCRBYFLOAT', wk, 'total_working_time', duration)
  local running = redis.call('HINCRBY', wk, 'hdx_running', -n)
  if running <= 0 then
    redis.call('HSET', wk, 'hdx_running', 0, 'state', 'idle', 'current_job_working_time', 0)
    redis.call('HDEL', wk, 'current_job')
  elseif ids[redis.call('HGET', wk, 'current_job')] then
    if next_current ~= '' then
      redis.call('HSET', wk, 'current_job', next_current)
    else
      redis.call('HDEL', wk, 'current_job')
    end
  end
end

-- One finished job's booking (worker_jobs_done for one).
local function worker_job_done(w, id, next_current, counter, duration)
  worker_jobs_done(w, {[id] = true}, 1, next_current, counter, tonumber(duration) or 0)
end

-- Enqueue the dependents of `parent` whose dependencies are now met [5.15]. After a failure
-- only dependents that allow failed dependencies qualify. Returns how many still wait (0: the
-- dependents set is gone).
local function release_dependents(parent, ts, after_failure)
  local dk = job_key(parent) .. ':dependents'
  local remaining = 0
  local dependents = redis.call('SMEMBERS', dk)
  for _, d in ipairs(dependents) do
    local djk = job_key(d)
    local st = redis.call('HGET', djk, 'status')
    local allow_failures = redis.call('HGET', djk, 'allow_dependency_failures') == '1'
    local ready = st ~= false and st ~= 'canceled' and (allow_failures or not after_failure)
    if ready then
      for _, p in ipairs(redis.call('SMEMBERS', 'rq:job::' .. d .. ':dependencies')) do
        if p ~= parent then
          local ps = redis.call('HGET', job_key(p), 'status')
          if not (ps == 'finished' or (allow_failures and (ps == 'failed' or ps == 'stopped'))) then
            ready = false
            break
          end
        end
      end
    end
    if ready then
      local origin = redis.call('HGET', djk, 'origin')
      redis.call('ZREM', 'rq:deferred:' .. origin, d)
      push_job(d, origin, ts, redis.call('HGET', djk, 'enqueue_at_front') == '1')
      redis.call('SREM', dk, d)
    elseif st == false then
      redis.call('SREM', dk, d)
    else
      remaining = remaining + 1
    end
  end
  if remaining == 0 and #dependents > 0 then redis.call('DEL', dk) end
  return remaining
end

-- Append one entry to a job's results stream [4]; `extra` is a flat list of field, value.
local function add_result(id, result_type, worker, extra)
  local cmd = {'XADD', 'rq:results:' .. id, 'MAXLEN', '~', '10', '*',
               'type', result_type, 'worker_name', worker}
  for _, v in ipairs(extra) do table.insert(cmd, v) end
  redis.call(unpack(cmd))
end

-- Remove every trace of a job [5.14].
local function delete_job(id)
  local jk = job_key(id)
  local origin = redis.call('HGET', jk, 'origin')
  if origin then
    redis.call('LREM', 'rq:queue:' .. origin, 0, id)
    redis.call('LREM', 'rq:queue:' .. origin .. ':intermediate', 0, id)
    for _, r in ipairs({'finished', 'failed', 'deferred', 'scheduled', 'canceled'}) do
      redis.call('ZREM', 'rq:' .. r .. ':' .. origin, id)
    end
    for _, x in ipairs(redis.call('ZRANGE', 'rq:executions:' .. id, 0, -1)) do
      end_execution(id, x, origin)
    end
    redis.call('ZREM', 'rq:wip:' .. origin, id)
  end
  local group = redis.call('HGET', jk, 'group_id')
  if group and group ~= '' then redis.call('SREM', 'rq:group:' .. group, id) end
  redis.call('DEL', jk, jk .. ':dependents', 'rq:job::' .. id .. ':dependencies',
             'rq:executions:' .. id, 'rq:results:' .. id)
end

-- Outcome counts: cluster-wide job metrics, read by the HTTP server's /metrics (our own keys,
-- `hdx:` prefix: a counter per event, queue and task, and a duration histogram, one bucket per
-- job, which the reader makes cumulative), and per-minute counts for the monitor's chart
-- (rq/history.rs: one hash per hour, `hdx:history:<hour start>`, fields
-- `<minute start>\t<event>\t<queue>`, each hash expiring a day after its hour ends, so the
-- history keeps itself small). A script gathers its outcomes in a tally and writes each distinct
-- counter once. `now`: whole seconds of the calling script's server clock (no second TIME).
local function new_tally()
  return {jobs = {}, history = {}, buckets = {}, sums = {}}
end

local function add(counts, key, n)
  counts[key] = (counts[key] or 0) + n
end

local function tally_job(tally, event, queue, func, duration, bucket, now)
  add(tally.jobs, event .. '\t' .. queue .. '\t' .. func, 1)
  add(tally.history, (now - now % 60) .. '\t' .. event .. '\t' .. queue, 1)
  if bucket ~= '' then
    local prefix = queue .. '\t' .. func .. '\t'
    add(tally.buckets, prefix .. bucket, 1)
    add(tally.sums, prefix .. 'sum', tonumber(duration) or 0)
  end
end

local function write_tally(tally, now)
  for field, n in pairs(tally.jobs) do
    redis.call('HINCRBY', 'hdx:metrics:jobs', field, n)
  end
  local hour = now - now % 3600
  local key = 'hdx:history:' .. hour
  if next(tally.history) then
    for field, n in pairs(tally.history) do redis.call('HINCRBY', key, field, n) end
    redis.call('EXPIREAT', key, hour + 3600 + 86400)
  end
  for field, n in pairs(tally.buckets) do
    redis.call('HINCRBY', 'hdx:metrics:durations', field, n)
  end
  for field, sum in pairs(tally.sums) do
    redis.call('HINCRBYFLOAT', 'hdx:metrics:durations', field, sum)
  end
end

-- One outcome's counts, written at once.
local function count_job(event, queue, func, duration, bucket, now)
  local tally = new_tally()
  tally_job(tally, event, queue, func, duration, bucket, now)
  write_tally(tally, now)
end
