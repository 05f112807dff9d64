-- Shared head of every script that changes a task (see keys.rs for the layout).
--
-- KEYS: 1 task hash, 2 inputs, 3 completed shards, 4 results (layout 1's
--       hash, layout 2's bucket prefix), 5 results:all, 6 results:succeeded
--       (both layout 1 only), 7 results:failed, 8 shard leases,
--       9 item starts, 10 ready shards, 11 held shards, 12 shard ranges,
--       13 unfinished index, 14 all-tasks index, 15 ended index, 16 sequence,
--       17 runnable index, 18 id index, 19.. one index per status, in the
--       order ARGV[1] names them, then the store's two summary keys
--       (stats:finished, stats:throughput), then the completion outbox's
--       two keys (completions, completions:ends).
-- ARGV: 1 status names (comma-separated, the order of KEYS[19..]),
--       2 terminal status names, 3 the in-progress status name,
--       4 retention in milliseconds, 5.. the script's own arguments.
--
-- The status rules live in Rust (dts-model); these scripts only apply the
-- sets of statuses they are given.

local TASK, INPUTS, SHARDS, RESULTS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local RES_ALL, RES_OK, RES_FAILED = KEYS[5], KEYS[6], KEYS[7]
local LEASES, STARTS = KEYS[8], KEYS[9]
local READY, HELD, RANGES = KEYS[10], KEYS[11], KEYS[12]
local UNFINISHED, ALL_TASKS, ENDED, SEQ = KEYS[13], KEYS[14], KEYS[15], KEYS[16]
local RUNNABLE, IDS = KEYS[17], KEYS[18]
-- Every key that belongs to one task, for the retention TTL, but for the
-- result buckets of layout 2 (see results_prelude.lua).
local RES_COUNTS, RES_WORKERS = RESULTS .. ':counts', RESULTS .. ':workers'
-- Item index -> JSON array of its earlier attempts (retry_task.lua).
local RES_HISTORY = RESULTS .. ':history'
-- The activity summaries (dts-store's activity.rs): `ok:{worker}` and
-- `failed:{worker}` -> results the worker recorded; bucket start (ms) ->
-- results recorded in that 10-second bucket.
local RES_BY_WORKER, RES_THROUGHPUT = RESULTS .. ':by-worker', RESULTS .. ':throughput'
local TASK_KEYS = {
  TASK, INPUTS, SHARDS, RESULTS, RES_ALL, RES_OK, RES_FAILED, LEASES, STARTS,
  READY, HELD, RANGES, RES_COUNTS, RES_WORKERS, RES_HISTORY, RES_BY_WORKER, RES_THROUGHPUT,
}
-- The store-wide summaries, the two keys before the outbox's: every result
-- recorded, and bucket start (ms) -> results recorded in it, kept for an hour.
local STATS_FINISHED, STATS_THROUGHPUT = KEYS[#KEYS - 3], KEYS[#KEYS - 2]
-- The completion outbox (outbox.rs), the last two keys: task id -> when its
-- entry was added or its claim expires (ms, Redis's clock), and task id ->
-- the finishedAt of the end the entry is for.
local OUTBOX, OUTBOX_ENDS = KEYS[#KEYS - 1], KEYS[#KEYS]
local BUCKET_MS, STORE_BUCKETS_KEPT_MS = 10000, 3600000

local BY_STATUS = {}
do
  local n = 0
  for name in string.gmatch(ARGV[1], '[^,]+') do
    BY_STATUS[name] = KEYS[19 + n]
    n = n + 1
  end
end
local TERMINAL = {}
for name in string.gmatch(ARGV[2], '[^,]+') do
  TERMINAL[name] = true
end
local IN_PROGRESS = ARGV[3]
local RETENTION_MS = tonumber(ARGV[4])

-- The reply: `head` followed by the task hash's fields and values.
local function reply(head)
  local fields = redis.call('HGETALL', TASK)
  for i = 1, #fields do
    head[#head + 1] = fields[i]
  end
  return head
end

-- Starts the retention clock: every key of the task expires together, and the
-- list indexes forget the task once it has (see the `ended` index). An
-- ended task is no longer runnable.
local function retain()
  for _, key in ipairs(TASK_KEYS) do
    redis.call('PEXPIRE', key, RETENTION_MS)
  end
  each_bucket(RESULTS, function(key)
    redis.call('PEXPIRE', key, RETENTION_MS)
  end)
  local member = redis.call('HGET', TASK, 'member')
  redis.call('ZREM', UNFINISHED, member)
  redis.call('ZREM', RUNNABLE, member)
  redis.call('ZADD', ENDED, int(redis_now_ms() + RETENTION_MS), member)
end

-- Keys created after the task ended (results a worker recorded after a
-- cancel) expire with the rest of it; `buckets` (optional) names the
-- result buckets the script wrote.
local function keep_retention(buckets)
  local ttl = redis.call('PTTL', TASK)
  if ttl > 0 then
    local function keep(key)
      if redis.call('PTTL', key) == -1 then
        redis.call('PEXPIRE', key, ttl)
      end
    end
    for _, key in ipairs(TASK_KEYS) do
      keep(key)
    end
    for key in pairs(buckets or {}) do
      keep(key)
    end
  end
end

-- Sets the status, moves the task between status indexes and stamps the
-- times entering `to` sets: startedAt for in-progress (unless set),
-- finishedAt (and retention) for a terminal status.
local function enter(to, now)
  local from = redis.call('HGET', TASK, 'status')
  local member = redis.call('HGET', TASK, 'member')
  if from and BY_STATUS[from] then
    redis.call('ZREM', BY_STATUS[from], member)
  end
  redis.call('ZADD', BY_STATUS[to], redis.call('HGET', TASK, 'createdAt'), member)
  redis.call('HSET', TASK, 'status', to)
  if to == IN_PROGRESS and redis.call('HEXISTS', TASK, 'startedAt') == 0 then
    redis.call('HSET', TASK, 'startedAt', now)
  end
  if TERMINAL[to] then
    redis.call('HSET', TASK, 'finishedAt', now)
    retain()
    -- Every end state, whichever script entered it, owes a completion event:
    -- the outbox entry is written here, with the status, so no path can end
    -- a task without one (a new terminal status, SKIPPED say, gets it too).
    local id = string.match(member, '^%d+:(.*)$')
    redis.call('ZADD', OUTBOX, int(redis_now_ms()), id)
    redis.call('HSET', OUTBOX_ENDS, id, now)
  end
end

-- Counts a change of the task in its `version` (hashes written before it
-- existed start from 0). Every script that changes a task field calls it
-- once; the SQLite store's save_state does the same.
local function bump()
  redis.call('HINCRBY', TASK, 'version', 1)
end

-- Upserts the results in ARGV[first..] and moves the task's counters by
-- the difference between each item's old outcome and its new one. The
-- results come in the form ARGV[first - 1] names: '1' triples (index, '1'
-- if it succeeded else '0', full result JSON), for a layout 1 task; '2'
-- sextuples (index, ok, worker, input as bytes, input as JSON, the compact
-- JSON of the other fields, see codec.rs), for a layout 2 task. The input
-- comes twice because it may not be UTF-8: the bytes compare with the
-- task's own, the JSON (Rust's, base64 when needed) is what is stored. Returns false and the
-- task's layout when the form does not fit it (nothing is written; the
-- caller asks Rust for the other form), else true, whether a counter moved,
-- and the set of bucket keys written. With `keep`, an item that has a
-- result already keeps it (a shard's results: the first result counts).
-- Adds the results a batch wrote (`tally`: worker -> {ok, failed}) to the
-- task's and the store's activity summaries (dts-store's activity.rs).
local function count_activity(tally)
  local written = 0
  for worker, counts in pairs(tally) do
    if counts[1] > 0 then
      redis.call('HINCRBY', RES_BY_WORKER, 'ok:' .. worker, counts[1])
    end
    if counts[2] > 0 then
      redis.call('HINCRBY', RES_BY_WORKER, 'failed:' .. worker, counts[2])
    end
    written = written + counts[1] + counts[2]
  end
  if written == 0 then
    return
  end
  local now = redis_now_ms()
  local bucket = int(now - now % BUCKET_MS)
  redis.call('HINCRBY', RES_THROUGHPUT, bucket, written)
  redis.call('INCRBY', STATS_FINISHED, written)
  if redis.call('HINCRBY', STATS_THROUGHPUT, bucket, written) == written then
    -- A new bucket: forget those older than the hour kept.
    local oldest = now - now % BUCKET_MS - STORE_BUCKETS_KEPT_MS
    for _, field in ipairs(redis.call('HKEYS', STATS_THROUGHPUT)) do
      if tonumber(field) < oldest then
        redis.call('HDEL', STATS_THROUGHPUT, field)
      end
    end
  end
end

local function apply_results(first, keep)
  local layout = results_layout(TASK)
  if ARGV[first - 1] ~= layout then
    return false, layout
  end
  local succeeded, failed = 0, 0
  -- Counts one result; `was` is nil for a first result, else whether the
  -- item had succeeded before.
  local function count(index, ok, was)
    if was == nil then
      if not ok then
        redis.call('ZADD', RES_FAILED, index, index)
      end
    else
      if was then
        succeeded = succeeded - 1
      else
        failed = failed - 1
      end
      if was ~= ok then
        if was then
          redis.call('ZADD', RES_FAILED, index, index)
        else
          redis.call('ZREM', RES_FAILED, index)
        end
      end
    end
    if ok then
      succeeded = succeeded + 1
    else
      failed = failed + 1
    end
  end
  -- Results written, by worker: {ok, failed}.
  local tally = {}
  local function note(worker, ok)
    local counts = tally[worker]
    if not counts then
      counts = { 0, 0 }
      tally[worker] = counts
    end
    if ok then
      counts[1] = counts[1] + 1
    else
      counts[2] = counts[2] + 1
    end
  end
  local buckets = {}
  if layout == '1' then
    for i = first, #ARGV, 3 do
      local index, ok, json = ARGV[i], ARGV[i + 1] == '1', ARGV[i + 2]
      -- HSET says whether the item had a result: only a re-recorded item
      -- looks up its old outcome.
      local set = keep and 'HSETNX' or 'HSET'
      if redis.call(set, RESULTS, index, json) == 1 then
        redis.call('ZADD', RES_ALL, index, index)
        if ok then
          redis.call('ZADD', RES_OK, index, index)
        end
        count(index, ok, nil)
        note(cjson.decode(json).worker or '', ok)
      elseif not keep then
        local was = not redis.call('ZSCORE', RES_FAILED, index)
        if was and not ok then
          redis.call('ZREM', RES_OK, index)
        elseif ok and not was then
          redis.call('ZADD', RES_OK, index, index)
        end
        count(index, ok, was)
        note(cjson.decode(json).worker or '', ok)
      end
    end
  else
    local indices = {}
    for i = first, #ARGV, 6 do
      indices[#indices + 1] = tonumber(ARGV[i])
    end
    local task_inputs = inputs_at(INPUTS, indices)
    local workers = {}
    for i = first, #ARGV, 6 do
      local text, ok, worker, input, input_json, rest =
        ARGV[i], ARGV[i + 1] == '1', ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
      local index = tonumber(text)
      local ref = workers[worker]
      if not ref then
        ref = redis.call('HGET', RES_WORKERS, 'id:' .. worker)
        if not ref then
          ref = int(redis.call('HLEN', RES_WORKERS) / 2 + 1)
          redis.call('HSET', RES_WORKERS, 'id:' .. worker, ref, ref, worker)
        end
        workers[worker] = ref
      end
      -- The value starts with the worker's number (results_page.lua reads
      -- it there); the input only when it is not the task's own.
      local value = '{"worker":' .. ref
      if input ~= task_inputs[index] then
        value = value .. ',"input":' .. input_json
      end
      if rest == '{}' then
        value = value .. '}'
      else
        value = value .. ',' .. string.sub(rest, 2)
      end
      local key = bucket_key(RESULTS, math.floor(index / BUCKET))
      buckets[key] = true
      if redis.call(keep and 'HSETNX' or 'HSET', key, int(index % BUCKET), value) == 1 then
        redis.call('HINCRBY', RES_COUNTS, int(math.floor(index / GROUP)), 1)
        count(text, ok, nil)
        note(worker, ok)
      elseif not keep then
        count(text, ok, not redis.call('ZSCORE', RES_FAILED, text))
        note(worker, ok)
      end
    end
  end
  if succeeded ~= 0 then
    redis.call('HINCRBY', TASK, 'itemsSucceeded', succeeded)
  end
  if failed ~= 0 then
    redis.call('HINCRBY', TASK, 'itemsFailed', failed)
  end
  count_activity(tally)
  return true, succeeded ~= 0 or failed ~= 0, buckets
end

-- The lease helpers (lease_prelude.lua), then the op-specific part follow.

-- Ends an in-progress task FAILED once its failures reach its halt
-- (`haltAfter`, the count dts-model's Halt::failures_to_halt gives), in
-- the script that counted them, so two workers recording failures at once
-- cannot both miss it. The reason reads as Halt::reason writes it. Items
-- not run stay without a result, as after a cancel. Returns whether the
-- task ended.
local function halt_if_crossed(now)
  local after = redis.call('HGET', TASK, 'haltAfter')
  if not after or redis.call('HGET', TASK, 'status') ~= IN_PROGRESS then
    return false
  end
  local failed = tonumber(redis.call('HGET', TASK, 'itemsFailed'))
  if failed < tonumber(after) then
    return false
  end
  local items = failed == 1 and ' item' or ' items'
  redis.call('HSET', TASK, 'error', 'halted: ' .. int(failed) .. items .. ' failed (halt '
    .. redis.call('HGET', TASK, 'halt') .. ')')
  -- dts-model's TaskStatus::Failed.
  enter('FAILED', now)
  return true
end

-- dts-model's TaskStatus::after_last_shard as Rust tabulated it
-- (LAST_SHARD_RULE in results.rs): ARGV[first] the number of entries n,
-- then n quadruples (status, 'none'/'some' items failed, the task's
-- reduce: 'none' or its `when`, the status to enter). Returns the rule
-- applied to the task as it is now (the status it enters, or nil: a case
-- not in the table keeps its status) and the index of the argument after
-- the table.
local function last_shard_rule(first)
  local n = tonumber(ARGV[first])
  local rule = {}
  for i = first + 1, first + 4 * n, 4 do
    rule[ARGV[i] .. ' ' .. ARGV[i + 1] .. ' ' .. ARGV[i + 2]] = ARGV[i + 3]
  end
  local function after_last_shard()
    local failures = tonumber(redis.call('HGET', TASK, 'itemsFailed')) == 0 and 'none' or 'some'
    local reduce = redis.call('HGET', TASK, 'reduceWhen') or 'none'
    return rule[redis.call('HGET', TASK, 'status') .. ' ' .. failures .. ' ' .. reduce]
  end
  return after_last_shard, first + 1 + 4 * n
end
