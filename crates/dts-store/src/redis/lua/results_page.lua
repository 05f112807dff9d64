-- One consistent read of a page of results.
-- KEYS: 1 task hash, 2 the index of the filter (results:all/succeeded/failed),
-- 3 the results hash. ARGV: 1 first rank, 2 last rank ('' for no page).
-- Reply: {'ok', total, index, json, index, json, ...} or {'notfound'}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 'notfound' }
end
local out = { 'ok', tostring(redis.call('ZCARD', KEYS[2])) }
if ARGV[1] ~= '' then
  local indices = redis.call('ZRANGE', KEYS[2], ARGV[1], ARGV[2])
  -- HMGET in slices: unpack() of a long list would overflow Lua's stack.
  for first = 1, #indices, 1000 do
    local last = math.min(first + 999, #indices)
    local values = redis.call('HMGET', KEYS[3], unpack(indices, first, last))
    for i = first, last do
      out[#out + 1] = indices[i]
      -- A result missing from the hash reads as '' and is reported as corrupt.
      out[#out + 1] = values[i - first + 1] or ''
    end
  end
end
return out
