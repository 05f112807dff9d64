-- Claims a task's reduce (Store::claim_reduce).
-- KEYS: 1 the task hash, 2 the workers index (worker id -> when its
-- heartbeat expires, ms on Redis's clock; see heartbeat.lua).
-- ARGV: 1 the reducing status name, 2 the claiming worker.
-- Another worker's claim holds while its heartbeat is live (a heartbeat
-- key lives through its expiry millisecond, as live_workers.lua reads
-- it); the worker's own claim is granted again: it restarted and no longer
-- runs what it claimed. A granted claim is one more attempt.
-- Reply: {'claimed', attempt}, {'held', owner}, {'status', the task's
-- status} or {'notfound'}.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return { 'notfound' }
end
if status ~= ARGV[1] then
  return { 'status', status }
end
local owner = redis.call('HGET', KEYS[1], 'reduceOwner')
if owner and owner ~= ARGV[2] then
  local expires = redis.call('ZSCORE', KEYS[2], owner)
  if expires and tonumber(expires) >= redis_now_ms() then
    return { 'held', owner }
  end
end
redis.call('HSET', KEYS[1], 'reduceOwner', ARGV[2])
return { 'claimed', int(redis.call('HINCRBY', KEYS[1], 'reduceAttempts', 1)) }
