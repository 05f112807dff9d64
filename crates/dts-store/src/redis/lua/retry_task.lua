-- ARGV[5] the task version the caller read, ARGV[6] now (ms), ARGV[7] the
-- status to enter (INPROGRESS, or REDUCING when no shard runs again and
-- the task's reduce does), ARGV[8] n, ARGV[9 .. 8+2n] pairs (failed item
-- index, its new history JSON), ARGV[9+2n ..] the shards to queue again.
-- Rust read the failed results, their histories and the plan and decided
-- the rest; this step applies it only if the task did not change since
-- (its version), so a concurrent retry, or a result recorded meanwhile,
-- sends the caller back to read again.
-- Reply: {'ok', task...}, {'changed'} or {'notfound'}.
if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
if (redis.call('HGET', TASK, 'version') or '0') ~= ARGV[5] then
  return { 'changed' }
end
local layout = results_layout(TASK)
local n = tonumber(ARGV[8])
local removed = 0
for i = 9, 8 + 2 * n, 2 do
  local index = ARGV[i]
  local gone = 0
  if layout == '1' then
    gone = redis.call('HDEL', RESULTS, index)
    redis.call('ZREM', RES_ALL, index)
    redis.call('ZREM', RES_OK, index)
  else
    local number = tonumber(index)
    gone = redis.call('HDEL', bucket_key(RESULTS, math.floor(number / BUCKET)), int(number % BUCKET))
    if gone == 1 then
      local group = int(math.floor(number / GROUP))
      if redis.call('HINCRBY', RES_COUNTS, group, -1) <= 0 then
        redis.call('HDEL', RES_COUNTS, group)
      end
    end
  end
  redis.call('ZREM', RES_FAILED, index)
  removed = removed + gone
  redis.call('HSET', RES_HISTORY, index, ARGV[i + 1])
end
if removed ~= 0 then
  redis.call('HINCRBY', TASK, 'itemsFailed', -removed)
end
local reopened = 0
for i = 9 + 2 * n, #ARGV do
  local shard = ARGV[i]
  if redis.call('SREM', SHARDS, shard) == 1 then
    reopened = reopened + 1
  end
  local f_owner, f_expires, f_attempts, f_dirty, f_since, f_copied = lease_fields(shard)
  redis.call('HDEL', LEASES, f_owner, f_expires, f_dirty, f_since, f_copied)
  -- Attempt 1, unowned: the claim is not the shard's first, so the
  -- claimant skips the items that succeeded, and not a new attempt, so no
  -- item counts as one that kills its workers.
  redis.call('HSET', LEASES, f_attempts, 1)
  redis.call('ZREM', HELD, shard)
  redis.call('ZADD', READY, shard, shard)
end
if reopened ~= 0 then
  redis.call('HINCRBY', TASK, 'chunksExecuted', -reopened)
end
enter(ARGV[7], ARGV[6])
-- The reduce runs again once the items have their results: its last
-- result and claim go, and its attempts count from 1 again.
redis.call('HDEL', TASK, 'finishedAt', 'error', 'reduceResult', 'reduceOwner', 'reduceAttempts')
-- Running again: the task's keys no longer expire, and it is listed as
-- unfinished and runnable, as before it ended.
for _, key in ipairs(TASK_KEYS) do
  redis.call('PERSIST', key)
end
each_bucket(RESULTS, function(key)
  redis.call('PERSIST', key)
end)
local member = redis.call('HGET', TASK, 'member')
local created = redis.call('HGET', TASK, 'createdAt')
redis.call('ZREM', ENDED, member)
redis.call('ZADD', UNFINISHED, created, member)
if #ARGV >= 9 + 2 * n then
  redis.call('ZADD', RUNNABLE, created, member)
end
bump()
return reply({ 'ok' })
