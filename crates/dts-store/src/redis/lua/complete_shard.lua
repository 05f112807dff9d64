-- ARGV[5] shard, ARGV[6] now (ms), ARGV[7] the completed status, ARGV[8]
-- the failed status, ARGV[9..] result triples (see apply_results).
-- Drops the shard's lease.
-- Reply: {'ok', newly completed '1'/'0', finished the task '1'/'0', task...},
-- {'noshard', chunksToExecute} or {'notfound'}.
if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
local planned = tonumber(redis.call('HGET', TASK, 'chunksToExecute'))
if tonumber(ARGV[5]) >= planned then
  -- Counting it would let chunksExecuted pass chunksToExecute.
  return { 'noshard', int(planned) }
end
local changed = apply_results(9)
-- Whoever held the lease, nobody runs a completed shard again.
redis.call('HDEL', LEASES, lease_fields(ARGV[5]))
local newly = redis.call('SADD', SHARDS, ARGV[5]) == 1
local finished = false
if newly then
  local done = redis.call('HINCRBY', TASK, 'chunksExecuted', 1)
  -- A task cancelled meanwhile keeps its status: only in-progress ends here.
  if done == planned and redis.call('HGET', TASK, 'status') == IN_PROGRESS then
    if tonumber(redis.call('HGET', TASK, 'itemsFailed')) == 0 then
      enter(ARGV[7], ARGV[6])
    else
      enter(ARGV[8], ARGV[6])
    end
    finished = true
  end
end
if changed or newly then
  bump()
end
keep_retention()
return reply({ 'ok', newly and '1' or '0', finished and '1' or '0' })
