-- ARGV[5] task id. Deletes an ended task: every key it owns and its
-- entries in every index, in one step.
-- Reply: {'deleted', task...}, {'notfound'} or {'running', current status}.
if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
local status = redis.call('HGET', TASK, 'status')
if not TERMINAL[status] then
  return { 'running', tostring(status) }
end
local answer = reply({ 'deleted' })
local member = redis.call('HGET', TASK, 'member')
-- The buckets first: each_bucket reads the counts key, deleted below.
each_bucket(RESULTS, function(key)
  redis.call('DEL', key)
end)
redis.call('DEL', unpack(TASK_KEYS))
if member then
  redis.call('ZREM', ALL_TASKS, member)
  redis.call('ZREM', UNFINISHED, member)
  redis.call('ZREM', RUNNABLE, member)
  redis.call('ZREM', ENDED, member)
  for _, index in pairs(BY_STATUS) do
    redis.call('ZREM', index, member)
  end
end
redis.call('ZREM', IDS, ARGV[5])
-- An event still owed goes with the task (see Store::delete_task).
redis.call('ZREM', OUTBOX, ARGV[5])
redis.call('HDEL', OUTBOX_ENDS, ARGV[5])
return answer
