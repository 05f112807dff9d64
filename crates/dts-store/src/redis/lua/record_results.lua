-- ARGV[5] a shard the batch belongs to ('' for none), ARGV[6..] result
-- triples (see apply_results).
-- Reply: {'ok', status}, {'noshard', chunksToExecute} or {'notfound'}.
if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
local planned = tonumber(redis.call('HGET', TASK, 'chunksToExecute'))
if ARGV[5] ~= '' and tonumber(ARGV[5]) >= planned then
  return { 'noshard', int(planned) }
end
if apply_results(6) then
  bump()
end
keep_retention()
return { 'ok', redis.call('HGET', TASK, 'status') }
