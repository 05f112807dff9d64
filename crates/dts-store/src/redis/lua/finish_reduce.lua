-- Records a reduce's result and ends its task (Store::finish_reduce).
-- ARGV[5] the reducing status name, ARGV[6] the worker, ARGV[7] the
-- attempt its claim was, ARGV[8] now (ms), ARGV[9] the result as JSON,
-- ARGV[10] the status to enter if no item failed, ARGV[11] the one if an
-- item did (dts-store's reduce_end, decided in Rust), ARGV[12] '1' to
-- store ARGV[13] as the error (the reduce failed).
-- Only the attempt holding the claim of a task still reducing counts: a
-- worker that lost the claim, or finished after a cancel, changes nothing.
-- Reply: {'ok', task...}, {'lost'} or {'notfound'}.
if redis.call('EXISTS', TASK) == 0 then
  return { 'notfound' }
end
if redis.call('HGET', TASK, 'status') ~= ARGV[5]
    or redis.call('HGET', TASK, 'reduceOwner') ~= ARGV[6]
    or (redis.call('HGET', TASK, 'reduceAttempts') or '0') ~= ARGV[7] then
  return { 'lost' }
end
redis.call('HSET', TASK, 'reduceResult', ARGV[9])
if ARGV[12] == '1' then
  redis.call('HSET', TASK, 'error', ARGV[13])
end
local failed = tonumber(redis.call('HGET', TASK, 'itemsFailed')) ~= 0
-- A terminal status: enter adds the outbox entry and starts the retention.
enter(failed and ARGV[11] or ARGV[10], ARGV[8])
bump()
return reply({ 'ok' })
