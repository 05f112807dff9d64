-- Compare-and-set: stores schedule ARGV[1]'s new JSON if its version is
-- still ARGV[2], and moves the version on by one.
-- KEYS: 1 the schedules hash, 2 their versions. ARGV: 1 name, 2 the version
-- read, 3 the new JSON. Reply: 1 if stored, 0 if changed meanwhile or gone.
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1
