-- KEYS: 1 the runnable index. ARGV: 1 the prefix of task keys (a task's
-- hash is the prefix and its id, its held set that and ':held'), 2 how
-- many tasks at most, 3 the in-progress status name.
-- Builds task keys from ARGV[1] because which tasks are read is only known
-- here; fine on one Redis, not on Redis Cluster (see the module docs).
-- Reply, per task oldest first: id, ready, held, n, then n field/value
-- pairs of its hash without the plan (a claim never needs it, and it can
-- be large). An entry whose task is gone or no longer in progress (it
-- cannot be, unless keys were changed by hand) is dropped.
local now = '(' .. int(redis_now_ms())
local out = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)) do
  local id = string.match(member, '^[^:]*:(.*)$') or member
  local key = ARGV[1] .. id
  local raw = redis.call('HGETALL', key)
  local fields, status, current, open = {}, nil, nil, 0
  for i = 1, #raw, 2 do
    local f, v = raw[i], raw[i + 1]
    if f == 'status' then
      status = v
    elseif f == 'member' then
      current = v
    elseif f == 'chunksToExecute' then
      open = open + tonumber(v)
    elseif f == 'chunksExecuted' then
      open = open - tonumber(v)
    end
    if f ~= 'plan' then
      fields[#fields + 1] = f
      fields[#fields + 1] = v
    end
  end
  if current ~= member or status ~= ARGV[3] or open <= 0 then
    redis.call('ZREM', KEYS[1], member)
  else
    local held = redis.call('ZCOUNT', key .. ':held', now, '+inf')
    out[#out + 1] = id
    out[#out + 1] = int(math.max(open - held, 0))
    out[#out + 1] = int(held)
    out[#out + 1] = int(#fields / 2)
    for i = 1, #fields do
      out[#out + 1] = fields[i]
    end
  end
end
return out
