-- Claims completion outbox entries (outbox.rs).
-- KEYS: 1 the outbox (task id -> when added or when its claim expires),
-- 2 its ends hash. ARGV: 1 how many at most, 2 settle (ms), 3 lease (ms).
-- Reply: id and the finishedAt its entry is for, per entry claimed, oldest
-- entry first.
local now = redis_now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int(now - tonumber(ARGV[2])),
  'LIMIT', 0, ARGV[1])
local until_ms = int(now + tonumber(ARGV[3]))
local reply = {}
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], until_ms, id)
  reply[#reply + 1] = id
  reply[#reply + 1] = redis.call('HGET', KEYS[2], id) or '0'
end
return reply
