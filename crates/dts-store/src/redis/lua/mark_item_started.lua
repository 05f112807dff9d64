-- ARGV[5] item index. Reply: {'ok', starts so far} or {'notfound'}.
if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
local starts = redis.call('HINCRBY', STARTS, ARGV[5], 1)
-- The counter hash may be new, after the task ended.
keep_retention()
return { 'ok', int(starts) }
