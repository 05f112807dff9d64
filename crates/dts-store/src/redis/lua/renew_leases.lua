-- KEYS: per task, its hash, its lease hash and its held set. ARGV: 1
-- worker, 2 lease in milliseconds, 3.. pairs: the task (1 for the first
-- three KEYS, 2 for the next three, ...) and the shard.
-- Reply: the positions (0-based) of the pairs the worker no longer holds.
-- Owned is all it takes: an expired lease nobody took over is still the
-- worker's. Only existing fields and members are set, so no key loses its TTL.
local expires = int(redis_now_ms() + tonumber(ARGV[2]))
local lost = {}
for i = 3, #ARGV, 2 do
  local task = tonumber(ARGV[i])
  local hash, leases, held = KEYS[3 * task - 2], KEYS[3 * task - 1], KEYS[3 * task]
  local f_owner, f_expires = lease_fields(ARGV[i + 1])
  if redis.call('EXISTS', hash) == 1 and redis.call('HGET', leases, f_owner) == ARGV[1] then
    redis.call('HSET', leases, f_expires, expires)
    redis.call('ZADD', held, 'XX', expires, ARGV[i + 1])
  else
    lost[#lost + 1] = (i - 3) / 2
  end
end
return lost
