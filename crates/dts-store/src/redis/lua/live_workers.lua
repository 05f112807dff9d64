-- KEYS: 1 the workers index. Drops the ids whose heartbeat has expired (by
-- Redis's clock) and returns the rest. A key lives through its expiry
-- millisecond, so only scores strictly before now are dropped: dropping at
-- now == expiry would call a worker gone while its key still refuses a
-- node-beat.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. int(redis_now_ms()))
return redis.call('ZRANGE', KEYS[1], 0, -1)
