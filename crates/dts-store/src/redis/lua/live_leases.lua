-- KEYS: 1 the task's held set. Reply: how many of its shards are held by a
-- lease that has not expired by Redis's clock.
return redis.call('ZCOUNT', KEYS[1], '(' .. int(redis_now_ms()), '+inf')
