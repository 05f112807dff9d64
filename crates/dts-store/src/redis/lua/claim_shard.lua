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
local f_owner, f_expires, f_attempts, f_dirty = lease_fields(shard)
local lease = redis.call('HMGET', LEASES, f_owner, f_expires, f_attempts, f_dirty)
local owner, expires = lease[1], tonumber(lease[2]) or 0
local attempts, dirty = tonumber(lease[3]) or 0, lease[4] == '1'
local now = redis_now_ms()
if owner then
  if expires > now then
    return { 'held', owner, int(expires - now) }
  end
  -- Expired while still owned: its worker stopped renewing (died).
  attempts = attempts + 1
elseif attempts == 0 or dirty then
  -- Never claimed, or handed back after a failure.
  attempts = attempts + 1
end
-- (Handed back cleanly: the same attempt carries on.)
redis.call('HSET', LEASES, f_owner, worker, f_expires, int(now + tonumber(ARGV[7])),
  f_attempts, int(attempts))
redis.call('HDEL', LEASES, f_dirty)
-- The lease hash may be new, after the task ended (cancelled meanwhile).
keep_retention()
return { 'acquired', int(attempts) }
