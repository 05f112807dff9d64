-- Deletes schedule ARGV[1].
-- KEYS: 1 the schedules hash, 2 their versions. Reply: 1 if deleted, 0 if
-- there was none.
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
