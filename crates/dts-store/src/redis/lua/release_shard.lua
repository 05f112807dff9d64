-- KEYS: 1 the task's lease hash. ARGV: 1 shard, 2 worker, 3 '1' if clean.
-- Only the owner can release; anyone else's release changes nothing.
-- Reply: 1 if released, else 0. Never creates the hash, so its TTL (if the
-- task ended) stays.
local f_owner, f_expires, _, f_dirty = lease_fields(ARGV[1])
if redis.call('HGET', KEYS[1], f_owner) ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[1], f_owner, f_expires)
if ARGV[3] ~= '1' then
  redis.call('HSET', KEYS[1], f_dirty, '1')
end
return 1
