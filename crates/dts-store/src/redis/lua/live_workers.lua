-- KEYS: 1 the workers index. Drops the ids whose heartbeat has expired (by
-- Redis's clock) and returns the rest.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(redis_now_ms()))
return redis.call('ZRANGE', KEYS[1], 0, -1)
