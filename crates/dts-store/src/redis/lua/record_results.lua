-- ARGV[5] a shard the batch belongs to ('' for none), ARGV[6] the token of
-- the copy that ran it ('' for a run that is not a copy), ARGV[7] the form
-- of the results, ARGV[8..] the results (see apply_results). A batch of a
-- shard completed before records nothing: the run that completed it
-- counted; nor does a copy's the shard no longer has (copy_replaced).
-- Reply: {'ok', status}, {'noshard', chunksToExecute}, {'layout', the
-- task's layout} (nothing written: send the other form), {'replaced'} or
-- {'notfound'}.
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
if ARGV[5] ~= '' and copy_replaced(ARGV[5], ARGV[6]) then
  return { 'replaced' }
end
-- A shard's results keep the first result of each item; plain recording
-- replaces (Store::record_shard_results, Store::record_results).
local fits, changed, buckets = apply_results(8, ARGV[5] ~= '')
if not fits then
  return { 'layout', changed }
end
if changed then
  halt_if_crossed(int(redis_now_ms()))
  bump()
end
keep_retention(buckets)
return { 'ok', redis.call('HGET', TASK, 'status') }
