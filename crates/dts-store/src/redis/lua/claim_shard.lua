-- ARGV[5] shard, ARGV[6] worker, ARGV[7] lease in milliseconds.
-- Reply: {'acquired', attempt}, {'held', owner, milliseconds left},
-- {'completed'}, {'noshard', chunksToExecute} or {'notfound'}.
-- The rules are those of `decide` in sqlite/leases.rs.
if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
local shard, worker = ARGV[5], ARGV[6]
if redis.call('SISMEMBER', SHARDS, shard) == 1 then
  return { 'completed' }
end
local planned = tonumber(redis.call('HGET', TASK, 'chunksToExecute'))
if tonumber(shard) >= planned then
  return { 'noshard', int(planned) }
end
local attempts, owner, left = acquire(LEASES, READY, HELD, shard, worker, tonumber(ARGV[7]),
  redis_now_ms())
if not attempts then
  return { 'held', owner, int(left) }
end
-- The lease keys may be new, after the task ended (cancelled meanwhile).
keep_retention()
return { 'acquired', int(attempts) }
