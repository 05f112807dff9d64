-- Forgets, in the list indexes, tasks whose retention has run out.
-- KEYS: 1 ended index, 2.. every list index. ARGV[1] how many at most.
-- Reply: how many were forgotten.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now),
  'LIMIT', 0, ARGV[1])
for _, member in ipairs(gone) do
  for i = 1, #KEYS do
    redis.call('ZREM', KEYS[i], member)
  end
end
return #gone
