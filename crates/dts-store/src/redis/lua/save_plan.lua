-- ARGV[5] plan JSON, ARGV[6] shard count, ARGV[7] now (ms), ARGV[8] the
-- status a plan with no shards ends in (dts-model's rule, decided in Rust).
-- Reply: {'created', task...}, {'existing', plan JSON, task...},
-- {'ended', task...} or {'notfound'}.
if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
local stored = redis.call('HGET', TASK, 'plan')
if stored then
  return reply({ 'existing', stored })
end
if TERMINAL[redis.call('HGET', TASK, 'status')] then
  return reply({ 'ended' })
end
redis.call('HSET', TASK, 'plan', ARGV[5], 'chunksToExecute', ARGV[6])
-- In progress first, so startedAt is set even when the task completes at once.
enter(IN_PROGRESS, ARGV[7])
if tonumber(ARGV[6]) == 0 then
  enter(ARGV[8], ARGV[7])
end
bump()
return reply({ 'created' })
