-- One consistent read of a page of results, in either layout (see
-- results_prelude.lua).
-- KEYS: 1 task hash, 2 inputs, 3 results, 4 layout 1's index of the filter
-- (results:all/succeeded/failed), 5 results:failed.
-- ARGV: 1 the filter ('all', 'succeeded' or 'failed'), 2 first rank,
-- 3 last rank ('' for no page).
-- Reply: {'ok', total, '1', index, json, ...} for layout 1;
-- {'ok', total, '2', n, n worker number/id pairs, then index, value, the
-- task's input at index, ...} for layout 2; or {'notfound'}.
local TASK, INPUTS, RESULTS, INDEX, FAILED = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
local filter, page = ARGV[1], ARGV[2] ~= ''

if results_layout(TASK) == '1' then
  local out = { 'ok', tostring(redis.call('ZCARD', INDEX)), '1' }
  if page then
    local indices = redis.call('ZRANGE', INDEX, ARGV[2], ARGV[3])
    -- HMGET in slices: unpack() of a long list would overflow Lua's stack.
    for first = 1, #indices, 1000 do
      local last = math.min(first + 999, #indices)
      local values = redis.call('HMGET', RESULTS, unpack(indices, first, last))
      for i = first, last do
        out[#out + 1] = indices[i]
        -- A result missing from the hash reads as '' and is reported as corrupt.
        out[#out + 1] = values[i - first + 1] or ''
      end
    end
  end
  return out
end

-- The page as {index, value} pairs, ascending.
local total, picked = 0, {}
if filter == 'failed' then
  total = redis.call('ZCARD', FAILED)
  if page then
    for _, text in ipairs(redis.call('ZRANGE', FAILED, ARGV[2], ARGV[3])) do
      local index = tonumber(text)
      local value = redis.call('HGET', bucket_key(RESULTS, math.floor(index / BUCKET)),
        int(index % BUCKET))
      picked[#picked + 1] = { index, value or '' }
    end
  end
else
  -- Ranks are counted by group (results:counts, less failures for
  -- 'succeeded'), then by bucket inside the group the page starts in: a
  -- page costs the groups, one group's buckets and the page itself.
  local succeeded_only = filter == 'succeeded'
  local function failures(low, high)
    if succeeded_only then
      return redis.call('ZCOUNT', FAILED, low, high)
    end
    return 0
  end
  local groups = result_groups(RESULTS)
  for _, group in ipairs(groups) do
    group[2] = group[2] - failures(group[1] * GROUP, (group[1] + 1) * GROUP - 1)
    total = total + group[2]
  end
  if page then
    local first = tonumber(ARGV[2])
    local wanted = tonumber(ARGV[3]) - first + 1
    local rank = 0
    for _, group in ipairs(groups) do
      if #picked >= wanted then
        break
      end
      if rank + group[2] <= first then
        rank = rank + group[2]
      else
        local from = group[1] * BUCKETS_PER_GROUP
        for bucket = from, from + BUCKETS_PER_GROUP - 1 do
          if #picked >= wanted then
            break
          end
          local key = bucket_key(RESULTS, bucket)
          local low = bucket * BUCKET
          local n = redis.call('HLEN', key) - failures(low, low + BUCKET - 1)
          if rank + n <= first then
            rank = rank + n
          else
            local failed = {}
            if succeeded_only then
              for _, text in ipairs(redis.call('ZRANGEBYSCORE', FAILED, low, low + BUCKET - 1)) do
                failed[tonumber(text)] = true
              end
            end
            local raw = redis.call('HGETALL', key)
            local entries = {}
            for i = 1, #raw, 2 do
              local index = low + tonumber(raw[i])
              if not failed[index] then
                entries[#entries + 1] = { index, raw[i + 1] }
              end
            end
            table.sort(entries, function(a, b) return a[1] < b[1] end)
            for _, entry in ipairs(entries) do
              if rank >= first and #picked < wanted then
                picked[#picked + 1] = entry
              end
              rank = rank + 1
            end
          end
        end
      end
    end
  end
end

-- The workers the page names (each value starts with its worker's number)
-- and the task's inputs, which a value leaves out when they are the same.
local indices, refs, named = {}, {}, {}
for _, entry in ipairs(picked) do
  indices[#indices + 1] = entry[1]
  local ref = string.match(entry[2], '^{"worker":(%d+)')
  if ref and not named[ref] then
    named[ref] = true
    refs[#refs + 1] = ref
  end
end
local out = { 'ok', int(total), '2', int(#refs) }
for _, ref in ipairs(refs) do
  out[#out + 1] = ref
  out[#out + 1] = redis.call('HGET', RESULTS .. ':workers', ref) or ''
end
local task_inputs = inputs_at(INPUTS, indices)
for _, entry in ipairs(picked) do
  out[#out + 1] = int(entry[1])
  out[#out + 1] = entry[2]
  out[#out + 1] = task_inputs[entry[1]] or ''
end
return out
