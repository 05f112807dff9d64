-- ARGV[5] worker, ARGV[6] lease in milliseconds, ARGV[7] the most unexpired
-- leases the task may hold ('' for no limit).
-- Takes the lowest-numbered ready shard: the lowest of the ready queue and
-- of the held shards whose lease expired (few: their workers died).
-- Reply: {'claimed', shard, attempt, range as start:len, '1' if the shard's
-- first claim ever else '0'}, {'atcapacity'},
-- {'noneready'}, {'ended'} or {'notfound'}.
if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
if redis.call('HGET', TASK, 'status') ~= IN_PROGRESS then
  return { 'ended' }
end
local now = redis_now_ms()
if ARGV[7] ~= '' then
  local held = redis.call('ZCOUNT', HELD, '(' .. int(now), '+inf')
  if held >= tonumber(ARGV[7]) then
    return { 'atcapacity' }
  end
end
local shard = nil
local first = redis.call('ZRANGE', READY, 0, 0)[1]
if first then
  shard = tonumber(first)
end
for _, expired in ipairs(redis.call('ZRANGEBYSCORE', HELD, '-inf', int(now))) do
  if not shard or tonumber(expired) < shard then
    shard = tonumber(expired)
  end
end
if not shard then
  return { 'noneready' }
end
shard = int(shard)
local attempts, first_or_owner = acquire(LEASES, READY, HELD, shard, ARGV[5], tonumber(ARGV[6]), now)
if not attempts then
  -- The queue offered a shard with a live owner: the keys disagree.
  return { 'inconsistent', shard, first_or_owner }
end
return { 'claimed', shard, int(attempts), redis.call('HGET', RANGES, shard) or '',
  first_or_owner and '1' or '0' }
