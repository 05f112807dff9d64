-- Removes task ARGV[1]'s outbox entry if it is still the one of the end at
-- finishedAt ARGV[2]: an entry of a later end (after a retry) stays.
-- KEYS: 1 the outbox, 2 its ends hash. Reply: 1 if removed, else 0.
local ended = redis.call('HGET', KEYS[2], ARGV[1])
if ended and ended ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
