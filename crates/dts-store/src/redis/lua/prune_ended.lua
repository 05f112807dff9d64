-- Forgets, in the list indexes, tasks whose retention has run out.
-- KEYS: 1 ended index, 2.. every list index. ARGV[1] how many at most.
-- Reply: how many were forgotten.
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int(redis_now_ms()),
  'LIMIT', 0, ARGV[1])
for _, member in ipairs(gone) do
  for i = 1, #KEYS do
    redis.call('ZREM', KEYS[i], member)
  end
end
return #gone
