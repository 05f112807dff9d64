-- KEYS: 1 the task's lease hash, 2 its hash, 3 its ready queue, 4 its held
-- set. ARGV: 1 shard, 2 worker, 3 '1' if clean, 4 the in-progress status name.
-- Only the owner can release; anyone else's release changes nothing.
-- The shard goes back on the ready queue unless the task ended.
-- Reply: 1 if released, else 0. Never creates a key, so their TTL (if the
-- task ended) stays.
local f_owner, f_expires, _, f_dirty = lease_fields(ARGV[1])
if redis.call('HGET', KEYS[1], f_owner) ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[1], f_owner, f_expires)
if ARGV[3] ~= '1' then
  redis.call('HSET', KEYS[1], f_dirty, '1')
end
redis.call('ZREM', KEYS[4], ARGV[1])
if redis.call('HGET', KEYS[2], 'status') == ARGV[4] then
  redis.call('ZADD', KEYS[3], ARGV[1], ARGV[1])
end
return 1
