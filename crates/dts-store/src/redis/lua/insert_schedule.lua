-- Stores a new schedule unless its name is taken.
-- KEYS: 1 the schedules hash (name -> JSON), 2 their versions (name -> n).
-- ARGV: 1 name, 2 JSON, 3 version. Reply: 1 if stored, 0 if taken.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
