-- Forgets, in the list indexes, tasks whose retention has run out.
-- KEYS: 1 ended index, 2 id index, 3.. every list index. ARGV[1] how many
-- at most, ARGV[2] what every task hash key starts with.
-- Reply: how many were forgotten.
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int(redis_now_ms()),
  'LIMIT', 0, ARGV[1])
for _, member in ipairs(gone) do
  redis.call('ZREM', KEYS[1], member)
  for i = 3, #KEYS do
    redis.call('ZREM', KEYS[i], member)
  end
  -- The id stays while a task of the same id lives (one stored again
  -- after the old one expired).
  local id = string.match(member, '^%d+:(.*)$')
  if id and redis.call('EXISTS', ARGV[2] .. id) == 0 then
    redis.call('ZREM', KEYS[2], id)
  end
end
return #gone
