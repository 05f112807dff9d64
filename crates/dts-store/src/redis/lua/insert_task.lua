-- ARGV[5] task id, ARGV[6] how many field/value arguments follow ARGV[8],
-- ARGV[7] createdAt, ARGV[8] status, ARGV[9..] field/value pairs of the task
-- hash, then the inputs, in order.
-- Reply: {'ok'} or {'exists'}.
if redis.call('EXISTS', TASK) == 1 then
  return { 'exists' }
end
-- Leftovers of an expired task with the same id, if any, go first.
each_bucket(RESULTS, function(key)
  redis.call('DEL', key)
end)
redis.call('DEL', INPUTS, SHARDS, RESULTS, RES_ALL, RES_OK, RES_FAILED, LEASES, STARTS,
  READY, HELD, RANGES, RES_COUNTS, RES_WORKERS, RES_HISTORY)

local id, created, status = ARGV[5], ARGV[7], ARGV[8]
-- The member in the list indexes: a zero-padded sequence number first, so
-- tasks created in the same millisecond sort by insertion.
local seq = tostring(redis.call('INCR', SEQ))
local member = string.rep('0', 20 - #seq) .. seq .. ':' .. id

local first_input = 9 + tonumber(ARGV[6])
-- New tasks keep their results in layout 2 (results_prelude.lua).
local fields = { 'member', member, 'resultsLayout', '2' }
for i = 9, first_input - 1 do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', TASK, unpack(fields))
-- A list, so a claimed shard reads its range alone (LRANGE). Pushed in
-- batches: unpack has a limit on how many values it spreads. No inputs, no
-- key (Redis has no empty lists).
local BATCH = 1000
for from = first_input, #ARGV, BATCH do
  redis.call('RPUSH', INPUTS, unpack(ARGV, from, math.min(from + BATCH - 1, #ARGV)))
end
redis.call('ZADD', ALL_TASKS, created, member)
-- Scored 0, so ZRANGEBYLEX finds the ids that start with a prefix.
redis.call('ZADD', IDS, 0, id)
redis.call('ZADD', BY_STATUS[status], created, member)
if TERMINAL[status] then
  retain()
else
  redis.call('ZADD', UNFINISHED, created, member)
end
return { 'ok' }
