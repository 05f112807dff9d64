-- Shared head of every script that reads or changes shard leases. A task's
-- leases are one hash (`P:task:{id}:leases`), four fields per shard:
--   {shard}:owner     the worker holding the lease; absent once released
--   {shard}:expires   when the owner's lease runs out (ms, Redis's clock)
--   {shard}:attempts  claims that counted: the first, and each after a
--                     worker lost the shard
--   {shard}:dirty     '1' after a release that was not clean: the next
--                     claim counts as a new attempt
--   {shard}:since     when the owner claimed it (ms, Redis's clock), for
--                     straggler speculation
--   {shard}:copied    the token of the copy of the shard handed out, if
--                     one was ('1' from a dts before copies had tokens)
-- A completed shard has none of them.
--
-- Beside the hash, a task keeps its ready queue (`:ready`, shards neither
-- completed nor owned, scored by index) and its held set (`:held`, owned
-- shards scored by when the lease expires; expired ones count as ready).
-- Every script that changes an owner keeps both in step.

-- The lease hash's field names for `shard`: owner, expires, attempts, dirty,
-- since, copied.
local function lease_fields(shard)
  return shard .. ':owner', shard .. ':expires', shard .. ':attempts', shard .. ':dirty',
    shard .. ':since', shard .. ':copied'
end

-- Whether a run of `shard` that passed copy token `token` ('' for a run
-- that is not a copy) is a copy the shard no longer has: a retry that
-- reopens the shard forgets its copy, and a later copy gets a new token.
local function copy_replaced(shard, token)
  if token == '' then
    return false
  end
  local _, _, _, _, _, f_copied = lease_fields(shard)
  return redis.call('HGET', LEASES, f_copied) ~= token
end

-- Claims `shard` for `worker` at `now` (ms) for `lease_ms`, by the rules of
-- `decide` in sqlite/leases.rs, and moves it from the ready queue to the
-- held set. Returns the attempt and whether this is the shard's first claim
-- ever; or nil, the owner and the milliseconds left when someone holds a
-- live lease.
local function acquire(leases, ready, held, shard, worker, lease_ms, now)
  local f_owner, f_expires, f_attempts, f_dirty, f_since = lease_fields(shard)
  local lease = redis.call('HMGET', leases, f_owner, f_expires, f_attempts, f_dirty)
  local owner, expires = lease[1], tonumber(lease[2]) or 0
  local attempts, dirty = tonumber(lease[3]) or 0, lease[4] == '1'
  local first = lease[3] == false or lease[3] == nil
  if owner then
    if expires > now then
      return nil, owner, expires - now
    end
    -- Expired while still owned: its worker stopped renewing (died).
    attempts = attempts + 1
  elseif attempts == 0 or dirty then
    -- Never claimed, or handed back after a failure.
    attempts = attempts + 1
  end
  -- (Handed back cleanly: the same attempt carries on.)
  local until_ms = int(now + lease_ms)
  redis.call('HSET', leases, f_owner, worker, f_expires, until_ms, f_attempts, int(attempts),
    f_since, int(now))
  redis.call('HDEL', leases, f_dirty)
  redis.call('ZREM', ready, shard)
  redis.call('ZADD', held, until_ms, shard)
  return attempts, first
end
