-- Fills the id index from the list of every task, once per database.
-- Tasks stored by a dts from before the index existed are in the list but
-- not in the index, so an id prefix would not find them; the marker makes
-- later connections skip the walk. ZADD is idempotent, so two processes
-- connecting at once both succeed.
-- KEYS[1] every task's list member, KEYS[2] the id index, KEYS[3] the marker.
if redis.call('EXISTS', KEYS[3]) == 1 then
  return -1
end
local added = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  -- A member is `<zero-padded sequence>:<id>`, or the bare id.
  local id = string.match(member, '^[0-9]+:(.+)$') or member
  added = added + redis.call('ZADD', KEYS[2], 0, id)
end
redis.call('SET', KEYS[3], '1')
return added
