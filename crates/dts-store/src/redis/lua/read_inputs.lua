-- Reads a task's inputs at list indices ARGV[1]..ARGV[2] (inclusive, as LRANGE).
-- KEYS: 1 task hash, 2 inputs.
-- Reply: {'none'} for an unknown task; {'list', input...} for the inputs in
-- range; {'json', whole list as JSON} for a task stored before inputs were a
-- list, which the caller decodes and slices.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 'none' }
end
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind == 'string' then
  return { 'json', redis.call('GET', KEYS[2]) }
end
local reply = { 'list' }
if kind == 'list' then
  local items = redis.call('LRANGE', KEYS[2], ARGV[1], ARGV[2])
  for i = 1, #items do
    reply[i + 1] = items[i]
  end
end
return reply
