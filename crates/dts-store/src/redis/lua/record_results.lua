-- ARGV[5] a shard the batch belongs to ('' for none), ARGV[6] the form of
-- the results, ARGV[7..] the results (see apply_results). A batch of a
-- shard completed before records nothing: the run that completed it counted.
-- Reply: {'ok', status}, {'noshard', chunksToExecute}, {'layout', the
-- task's layout} (nothing written: send the other form) or {'notfound'}.
if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
local planned = tonumber(redis.call('HGET', TASK, 'chunksToExecute'))
if ARGV[5] ~= '' and tonumber(ARGV[5]) >= planned then
  return { 'noshard', int(planned) }
end
if ARGV[5] ~= '' and redis.call('SISMEMBER', SHARDS, ARGV[5]) == 1 then
  return { 'ok', redis.call('HGET', TASK, 'status') }
end
-- A shard's results keep the first result of each item; plain recording
-- replaces (Store::record_shard_results, Store::record_results).
local fits, changed, buckets = apply_results(7, ARGV[5] ~= '')
if not fits then
  return { 'layout', changed }
end
if changed then
  halt_if_crossed(int(redis_now_ms()))
  bump()
end
keep_retention(buckets)
return { 'ok', redis.call('HGET', TASK, 'status') }
