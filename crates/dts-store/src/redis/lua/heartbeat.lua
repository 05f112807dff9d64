-- KEYS: 1 the worker's key, 2 the workers index.
-- ARGV: 1 the worker as JSON, 2 TTL in milliseconds, 3 worker id, 4 its
-- kind ('dts' or 'node-beat').
-- Reply: 1 if recorded, 0 if refused. A node-beat never replaces a live dts
-- worker's entry (the rule of Store::heartbeat, as in sqlite/workers.rs);
-- the key exists only while the heartbeat is live, and an entry without a
-- kind was written by a dts worker before kinds existed.
-- The key expires by itself at one instant on Redis's clock, and the index
-- is scored by that same instant, so listing drops an id exactly when its
-- key has expired (Redis treats a key as expired once now > its expiry).
if ARGV[4] == 'node-beat' then
  local current = redis.call('GET', KEYS[1])
  if current then
    local ok, old = pcall(cjson.decode, current)
    if not ok or type(old) ~= 'table' or old.kind == nil or old.kind == 'dts' then
      return 0
    end
  end
end
local expires = int(redis_now_ms() + tonumber(ARGV[2]))
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', expires)
redis.call('ZADD', KEYS[2], expires, ARGV[3])
return 1
