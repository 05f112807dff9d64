-- Shared head of every script that reads or changes shard leases. A task's
-- leases are one hash (`P:task:{id}:leases`), four fields per shard:
--   {shard}:owner     the worker holding the lease; absent once released
--   {shard}:expires   when the owner's lease runs out (ms, Redis's clock)
--   {shard}:attempts  claims that counted: the first, and each after a
--                     worker lost the shard
--   {shard}:dirty     '1' after a release that was not clean: the next
--                     claim counts as a new attempt
-- A completed shard has none of them.

-- The lease hash's field names for `shard`: owner, expires, attempts, dirty.
local function lease_fields(shard)
  return shard .. ':owner', shard .. ':expires', shard .. ':attempts', shard .. ':dirty'
end
