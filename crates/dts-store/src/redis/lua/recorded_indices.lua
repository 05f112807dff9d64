-- The recorded indices in start..end (end exclusive), ascending, in either
-- layout (see results_prelude.lua).
-- KEYS: 1 task hash, 2 results, 3 results:all (layout 1).
-- ARGV: 1 start, 2 end. Reply: {'ok', index, ...} or {'notfound'}.
local TASK, RESULTS, ALL = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
local out = { 'ok' }
if results_layout(TASK) == '1' then
  for _, index in ipairs(redis.call('ZRANGEBYSCORE', ALL, ARGV[1], '(' .. ARGV[2])) do
    out[#out + 1] = index
  end
  return out
end
local low, high = tonumber(ARGV[1]), tonumber(ARGV[2]) - 1
local found = {}
-- Only buckets of groups that hold results: a range far past the last
-- result costs nothing.
for _, group in ipairs(result_groups(RESULTS)) do
  local from = math.max(group[1] * BUCKETS_PER_GROUP, math.floor(low / BUCKET))
  local to = math.min((group[1] + 1) * BUCKETS_PER_GROUP - 1, math.floor(high / BUCKET))
  for bucket = from, to do
    for _, field in ipairs(redis.call('HKEYS', bucket_key(RESULTS, bucket))) do
      local index = bucket * BUCKET + tonumber(field)
      if index >= low and index <= high then
        found[#found + 1] = index
      end
    end
  end
end
table.sort(found)
for _, index in ipairs(found) do
  out[#out + 1] = int(index)
end
return out
