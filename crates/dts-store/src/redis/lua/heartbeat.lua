-- KEYS: 1 the worker's key, 2 the workers index.
-- ARGV: 1 the worker as JSON, 2 TTL in milliseconds, 3 worker id.
-- The key expires by itself; the index is scored by the same expiry time
-- (Redis's clock) so listing can drop expired ids.
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], int(redis_now_ms() + tonumber(ARGV[2])), ARGV[3])
return 'OK'
