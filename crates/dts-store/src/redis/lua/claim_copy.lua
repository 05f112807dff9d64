-- ARGV[5] worker, ARGV[6] milliseconds per item, ARGV[7] minimum
-- milliseconds, ARGV[8] the copy's token.
-- Straggler speculation (Store::claim_copy): when the task has no ready
-- shard, the held shard claimed longest ago beyond its items × ARGV[6] (and
-- ARGV[7]), not copied before and never lost by a worker, preferring one another worker holds; marks it
-- copied with the token.
-- Reply: {'copied', shard, attempt, range as start:len, token}, {'none'},
-- {'ended'} or {'notfound'}.
if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
if redis.call('HGET', TASK, 'status') ~= IN_PROGRESS then
  return { 'ended' }
end
local now = redis_now_ms()
-- Shards still to hand out (queued, or held by a lease that expired) come
-- first: a copy is only for a task whose every open shard runs.
if redis.call('ZCARD', READY) > 0 or redis.call('ZCOUNT', HELD, '-inf', int(now)) > 0 then
  return { 'none' }
end
local worker, per_item, min = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local best, best_own, best_since, best_range, best_attempts = nil, nil, nil, nil, nil
for _, shard in ipairs(redis.call('ZRANGEBYSCORE', HELD, '(' .. int(now), '+inf')) do
  local f_owner, _, f_attempts, _, f_since, f_copied = lease_fields(shard)
  local lease = redis.call('HMGET', LEASES, f_owner, f_attempts, f_since, f_copied)
  local range = redis.call('HGET', RANGES, shard)
  -- A shard that lost a worker before may hold an item that kills its
  -- workers: it is not copied.
  if lease[1] and not lease[4] and range and (tonumber(lease[2]) or 1) <= 1 then
    local since = tonumber(lease[3]) or 0
    local len = tonumber(string.match(range, ':(%d+)$')) or 1
    local expected = math.max(len * per_item, min)
    local own = lease[1] == worker
    if now - since > expected then
      local better = best == nil
        or (not own and best_own)
        or (own == best_own and since < best_since)
      if better then
        best, best_own, best_since, best_range, best_attempts = shard, own, since, range, lease[2]
      end
    end
  end
end
if not best then
  return { 'none' }
end
local _, _, _, _, _, f_copied = lease_fields(best)
redis.call('HSET', LEASES, f_copied, ARGV[8])
return { 'copied', best, best_attempts or '1', best_range, ARGV[8] }
