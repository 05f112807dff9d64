-- ARGV[5] shard, ARGV[6] the copy's token. Whether a copy of the shard may
-- start another item (Store::copy_state): the shard is open, the task
-- INPROGRESS and the copy still the shard's (copy_replaced).
-- Reply: {'runs'}, {'completed'}, {'ended', status}, {'replaced'} or
-- {'notfound'}.
if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
if redis.call('SISMEMBER', SHARDS, ARGV[5]) == 1 then
  return { 'completed' }
end
local status = redis.call('HGET', TASK, 'status')
if status ~= IN_PROGRESS then
  return { 'ended', status }
end
if copy_replaced(ARGV[5], ARGV[6]) then
  return { 'replaced' }
end
return { 'runs' }
