-- ARGV[5] shard, ARGV[6] the token of the copy that ran it ('' for a run
-- that is not a copy), ARGV[7] now (ms), ARGV[8] n, the number of rule
-- entries, ARGV[9 .. 8+4n] the completion rule (see last_shard_rule),
-- ARGV[9+4n] the form of the results, ARGV[10+4n ..] the results (see
-- apply_results). A copy the shard no longer has (copy_replaced) records
-- nothing. The
-- rule is dts-model's TaskStatus::after_last_shard, tabulated by Rust: this
-- script only looks its case up, inside the same atomic step that counts
-- the shard. A case not in the table keeps its status; REDUCING, not an
-- end, reports the task as not finished (its reduce's record ends it).
-- Drops the shard's lease and takes it off the ready queue and held set.
-- An INPROGRESS task's shard completes only when each of its items has a
-- result: after a Redis failover, results the old primary alone had are
-- gone although the worker ran those items. Such a shard is handed back to
-- the ready queue (cleanly: the same attempt), and its next run runs just
-- the items without a result.
-- Reply: {'ok', newly completed '1'/'0', finished the task '1'/'0', task...},
-- {'incomplete', items without a result, task...},
-- {'noshard', chunksToExecute}, {'layout', the task's layout} (nothing
-- written: send the other form), {'replaced'} or {'notfound'}.
-- How many items of `shard` have no result (0 when its range is unknown:
-- a task planned by a dts from before ranges were kept).
local function results_missing(shard)
  local range = redis.call('HGET', RANGES, shard)
  if not range then
    return 0
  end
  local colon = string.find(range, ':', 1, true)
  local start, len = tonumber(string.sub(range, 1, colon - 1)), tonumber(string.sub(range, colon + 1))
  local layout = results_layout(TASK)
  local missing = 0
  for index = start, start + len - 1 do
    local found
    if layout == '2' then
      found = redis.call('HEXISTS', bucket_key(RESULTS, math.floor(index / BUCKET)), int(index % BUCKET))
    else
      found = redis.call('HEXISTS', RESULTS, int(index))
    end
    if found == 0 then
      missing = missing + 1
    end
  end
  return missing
end

if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
local planned = tonumber(redis.call('HGET', TASK, 'chunksToExecute'))
if tonumber(ARGV[5]) >= planned then
  -- Counting it would let chunksExecuted pass chunksToExecute.
  return { 'noshard', int(planned) }
end
if redis.call('SISMEMBER', SHARDS, ARGV[5]) == 1 then
  -- The first run to complete the shard counted; this one records nothing.
  return reply({ 'ok', '0', '0' })
end
if copy_replaced(ARGV[5], ARGV[6]) then
  return { 'replaced' }
end
local after_last_shard, form = last_shard_rule(8)
local fits, changed, buckets = apply_results(form + 1, true)
if not fits then
  return { 'layout', changed }
end
if redis.call('HGET', TASK, 'status') == IN_PROGRESS then
  local missing = results_missing(ARGV[5])
  if missing > 0 then
    local f_owner, f_expires = lease_fields(ARGV[5])
    redis.call('HDEL', LEASES, f_owner, f_expires)
    redis.call('ZREM', HELD, ARGV[5])
    redis.call('ZADD', READY, ARGV[5], ARGV[5])
    if changed then
      bump()
    end
    keep_retention(buckets)
    return reply({ 'incomplete', int(missing) })
  end
end
-- Whoever held the lease, nobody runs a completed shard again.
redis.call('HDEL', LEASES, lease_fields(ARGV[5]))
redis.call('ZREM', READY, ARGV[5])
redis.call('ZREM', HELD, ARGV[5])
local newly = redis.call('SADD', SHARDS, ARGV[5]) == 1
local finished = changed and halt_if_crossed(ARGV[7])
if newly then
  local done = redis.call('HINCRBY', TASK, 'chunksExecuted', 1)
  if done == planned then
    local to = after_last_shard()
    if to then
      enter(to, ARGV[7])
      finished = finished or TERMINAL[to] == true
    end
  end
end
if changed or newly then
  bump()
end
keep_retention(buckets)
return reply({ 'ok', newly and '1' or '0', finished and '1' or '0' })
