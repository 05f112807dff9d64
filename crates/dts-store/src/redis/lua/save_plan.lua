-- ARGV[5] plan JSON, ARGV[6] shard count, ARGV[7] now (ms), ARGV[8 ..]
-- the completion rule (see last_shard_rule), which a plan with no shards
-- applies at once (COMPLETED, or REDUCING for a task with a reduce), then
-- each shard's range as `start:len`, in shard order.
-- Every shard starts ready, and the task runnable (when it has a shard).
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
local after_last_shard, first_range = last_shard_rule(8)
redis.call('HSET', TASK, 'plan', ARGV[5], 'chunksToExecute', ARGV[6])
local count = tonumber(ARGV[6])
-- In slices: unpack() of a long list would overflow Lua's stack.
for first = 0, count - 1, 500 do
  local scored, ranges = {}, {}
  for shard = first, math.min(first + 499, count - 1) do
    scored[#scored + 1] = shard
    scored[#scored + 1] = shard
    ranges[#ranges + 1] = shard
    ranges[#ranges + 1] = ARGV[first_range + shard]
  end
  redis.call('ZADD', READY, unpack(scored))
  redis.call('HSET', RANGES, unpack(ranges))
end
if count > 0 then
  redis.call('ZADD', RUNNABLE, redis.call('HGET', TASK, 'createdAt'), redis.call('HGET', TASK, 'member'))
end
-- In progress first, so startedAt is set even when the task completes at once.
enter(IN_PROGRESS, ARGV[7])
if count == 0 then
  -- No shards: planning completed the last one, with nothing failed.
  local to = after_last_shard()
  if to then
    enter(to, ARGV[7])
  end
end
bump()
return reply({ 'created' })
