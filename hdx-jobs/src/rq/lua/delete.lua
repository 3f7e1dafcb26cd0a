-- Delete a job and every trace of it [5.14].  ARGV: id.  Returns 0 when it did not exist.
local existed = redis.call('EXISTS', job_key(ARGV[1]))
delete_job(ARGV[1])
return existed
