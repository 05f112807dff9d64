-- Shared helpers of the results layouts (see the key table in mod.rs).
--
-- Layout 1 (tasks stored before `resultsLayout` existed): a hash `results`
-- of index -> full result JSON, and sorted sets `results:all`,
-- `results:succeeded`, `results:failed`.
-- Layout 2 (`resultsLayout` = '2' in the task hash): results in buckets of
-- BUCKET items, `results:{index // BUCKET}`, field index % BUCKET -> compact
-- JSON (see codec.rs); `results:counts`, group index // GROUP -> how many
-- results the group holds, to find a page's first bucket without counting
-- every bucket; `results:workers`, the task's worker ids as small numbers
-- (`id:{worker}` -> n and n -> worker); `results:failed` as in layout 1.
-- A bucket of at most 128 fields, each value at most 64 bytes, is one
-- compact listpack in Redis (`hash-max-listpack-entries`/`-value` by
-- default), a fraction of a hashtable's and a sorted set's per-entry cost.
-- Helpers take the key names they use, so the read scripts (which have no
-- task prelude) share them.

local BUCKET = 128
local BUCKETS_PER_GROUP = 128
local GROUP = BUCKET * BUCKETS_PER_GROUP

-- The results layout of a task (1 for tasks stored before layouts existed).
local function results_layout(task)
  return redis.call('HGET', task, 'resultsLayout') or '1'
end

local function bucket_key(results, bucket)
  return results .. ':' .. string.format('%.0f', bucket)
end

-- The groups that have results, ascending, as {group, results in it}.
local function result_groups(results)
  local raw = redis.call('HGETALL', results .. ':counts')
  local groups = {}
  for i = 1, #raw, 2 do
    groups[#groups + 1] = { tonumber(raw[i]), tonumber(raw[i + 1]) }
  end
  table.sort(groups, function(a, b) return a[1] < b[1] end)
  return groups
end

-- Calls f with the key of every bucket that may hold a result.
local function each_bucket(results, f)
  for _, group in ipairs(result_groups(results)) do
    local first = group[1] * BUCKETS_PER_GROUP
    for bucket = first, first + BUCKETS_PER_GROUP - 1 do
      f(bucket_key(results, bucket))
    end
  end
end

-- The task inputs at `indices` (numbers), as a table index -> input (nil
-- where there is none). One LRANGE when the indices are close together
-- (a shard's batch, a page), else one LINDEX each.
local function inputs_at(inputs, indices)
  local out = {}
  if #indices == 0 then
    return out
  end
  local low, high = indices[1], indices[1]
  for _, index in ipairs(indices) do
    low = math.min(low, index)
    high = math.max(high, index)
  end
  if high - low < 4 * #indices + 64 then
    local values = redis.call('LRANGE', inputs, low, high)
    for _, index in ipairs(indices) do
      out[index] = values[index - low + 1]
    end
  else
    for _, index in ipairs(indices) do
      out[index] = redis.call('LINDEX', inputs, index) or nil
    end
  end
  return out
end
