-- ARGV[5] target status, ARGV[6] now (ms), ARGV[7] '1' to store ARGV[8] as
-- the error, ARGV[9..] the statuses from which the target is legal.
-- Reply: {'ok', task...}, {'notfound'} or {'illegal', current status}.
if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
local from = redis.call('HGET', TASK, 'status')
local legal = false
for i = 9, #ARGV do
  if ARGV[i] == from then
    legal = true
  end
end
if not legal then
  return { 'illegal', tostring(from) }
end
if ARGV[7] == '1' then
  redis.call('HSET', TASK, 'error', ARGV[8])
end
enter(ARGV[5], ARGV[6])
bump()
return reply({ 'ok' })
