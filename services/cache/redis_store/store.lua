#!lua name=rinha
--[[
The cache's state in Redis: one function per RPC batch, each atomic, each one
round trip. The rules are services/cache/store.py's; the Python side is
services/cache/redis_store/__init__.py. Every key starts with KEYS[1] (a
prefix with a hash tag, so that all of them share one slot).

Time is Redis' own (TIME), never a cache front's: leases, delays, heartbeats
and poll slots are compared on one clock whichever machine asks.

Keys (P = KEYS[1]):
  P.."pay"      hash  id -> "state amount attempts check processor requestedAt accepted"
                      (state 1 queued, 2 delayed, 3 leased, 4 done, 5 rejected;
                      attempts: returns to the queue so far, which also number
                      the lease (lease_of below); the same field, under the same
                      rule, in records of every earlier version;
                      check and processor "-" when empty; a rejected payment's
                      processor is the one that refused it; accepted: when it
                      was submitted, ms on Redis' clock, 0 if unknown: records
                      written before it existed have six fields). The
                      deduplication set: an id stays until a purge or, once
                      processed, until the retention has passed (rinha_expire).
  P.."done"     zset  id -> when it was processed (ms): the processed ids still in
                      "pay", in the order they expire
  P.."why"      hash  id -> why a rejected payment was refused
  P.."queue"    zset  id -> position (back: INCR tail; front: DECR head)
  P.."delayed"  zset  id -> due (ms)
  P.."leases"   zset  id -> lease deadline (ms)
  P.."held"     hash  id -> holder (the consumer the lease was lent to)
  P.."alive"    zset  consumer -> alive until (ms)
  P.."reap"     zset  consumer -> when its leases come back (alive until + settle)
  P.."settle"   hash  consumer -> the longest settle time it announced (ms)
  P.."cstats"   hash  consumer -> its last ConsumerStats (opaque bytes)
  P.."poller"   hash  processor -> "consumer token until"
  P.."nextpoll" hash  processor -> earliest next health call (ms)
  P.."health"   hash  processor -> "failing minResponseTime checkedAt"
  P.."lc:"..p / P.."la:"..p  hash  ledger buckets: count / amount (below)
  P.."n"        hash  counters: done (processed and still in "pay", so the backlog
                      is HLEN pay - done - rejected), duplicates, requeued, stale,
                      late, rejected (parked now), expired_duplicates (completions
                      charged in an earlier life of their id, not counted again),
                      forgotten (processed ids expired from "pay"); tokens
  P.."head", P.."tail"  queue positions
  P.."work"     pub/sub channel: "there is work", so long polls wake at once

The ledger: per processor, radix-16 buckets of requestedAt at 12 levels
(level L, index floor(ms / 16^L); 16^11 ms is 557 years, so until 2527 one
level-11 bucket holds the total). A completion adds to one bucket per level (24 HINCRBY); a window
[lo, hi] is at most 15 buckets per side per level (one HMGET of <= 360 fields
per hash), whatever the number of payments. Nothing reads "pay" to sum: the
ledger outlives the ids that expire from it.

A long life: rinha_complete and rinha_expire take the retention (ms; 0: keep
every id until a purge) from the front that calls them. rinha_expire forgets at
most EXPIRE_BATCH processed ids per call (about once a second per front), so
no call holds Redis for long. A completion whose requestedAt is older than its
payment's acceptance by more than half the retention was charged in an earlier
life of the id (services/cache/store.py): done, not added to the ledger again.
]]

local LEVELS, RADIX = 12, 16
local TOP = RADIX ^ (LEVELS - 1) * RADIX - 1  -- the last millisecond the buckets cover
local PROCESSORS = {'default', 'fallback'}
local IS_PROCESSOR = {default = true, fallback = true}
local EVERYWHERE = 'default,fallback'
local QUEUED, DELAYED, LEASED, DONE, REJECTED = 1, 2, 3, 4, 5
local EXPIRE_BATCH = 5000  -- most ids one rinha_expire forgets (and under Lua's unpack limit)

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The "pay" record, parsed and packed here only. n: attempts (returns to
-- the queue so far; lease_of). at: accepted (ms), '0' in records older than
-- the field.
local function parse(rec)
  local s, a, n, c, p, t, at = string.match(rec, '^(%d) (%-?%d+) (%d+) (%S+) (%S+) (%-?%d+) (%d+)$')
  if not s then
    s, a, n, c, p, t = string.match(rec, '^(%d) (%-?%d+) (%d+) (%S+) (%S+) (%-?%d+)$')
    at = '0'
  end
  return {s = tonumber(s), a = a, n = tonumber(n), c = c, p = p, t = t, at = at}
end

-- The lease a payment is (or will next be) lent under. Not a field of its
-- own: between two lendings a payment goes back to the queue exactly once
-- (requeue, expire_one, or revive after a rejection), each adding one to
-- r.n, the count of returns (LookupReply.attempts), so that count numbers
-- the lendings 0, 1, 2, ... A hand-back or rejection naming an earlier lease
-- is stale (services/cache/store.py): it would end the current one.
local function lease_of(r)
  return r.n
end

local function pack(r)
  return r.s .. ' ' .. r.a .. ' ' .. string.format('%d', r.n) .. ' ' .. r.c .. ' ' .. r.p .. ' ' .. r.t
    .. ' ' .. r.at
end

local function fresh(amount, accepted)
  return pack({s = QUEUED, a = amount, n = 0, c = '-', p = '-', t = '0', at = string.format('%d', accepted)})
end

local function enqueue(P, id, front)
  local pos
  if front then pos = redis.call('DECR', P .. 'head') else pos = redis.call('INCR', P .. 'tail') end
  redis.call('ZADD', P .. 'queue', pos, id)
end

local function unlease(P, id)
  redis.call('ZREM', P .. 'leases', id)
  redis.call('HDEL', P .. 'held', id)
end

-- A lease that ran out, or whose holder is gone: back to the head of the
-- queue, to be checked everywhere; one more return, so the next lending is
-- under a new lease and the old holder's hand-backs are stale.
local function expire_one(P, id)
  local raw = redis.call('HGET', P .. 'pay', id)
  unlease(P, id)
  if not raw then return 0 end
  local r = parse(raw)
  if r.s ~= LEASED then return 0 end
  r.s, r.c, r.n = QUEUED, EVERYWHERE, r.n + 1
  redis.call('HSET', P .. 'pay', id, pack(r))
  enqueue(P, id, true)
  return 1
end

-- Accepted and not processed yet: neither done nor parked as rejected.
local function backlog(P)
  local n = redis.call('HMGET', P .. 'n', 'done', 'rejected')
  return redis.call('HLEN', P .. 'pay') - tonumber(n[1] or '0') - tonumber(n[2] or '0')
end

local function bucket(level, index)
  return string.format('%d:%d', level, index)
end

local function ledger_add(P, processor, t, amount)
  local kc, ka = P .. 'lc:' .. processor, P .. 'la:' .. processor
  local index = tonumber(t)
  if index < 0 or index > TOP then return end  -- outside 1970..2527: not a requestedAt we stamp
  for level = 0, LEVELS - 1 do
    local field = bucket(level, index)
    redis.call('HINCRBY', kc, field, 1)
    redis.call('HINCRBY', ka, field, amount)
    index = math.floor(index / RADIX)
  end
end

local function window_fields(lo, hi)
  local fields, level = {}, 0
  while lo <= hi do
    if level == LEVELS - 1 then
      for i = lo, hi do fields[#fields + 1] = bucket(level, i) end
      break
    end
    while lo <= hi and lo % RADIX ~= 0 do fields[#fields + 1] = bucket(level, lo); lo = lo + 1 end
    while lo <= hi and (hi + 1) % RADIX ~= 0 do fields[#fields + 1] = bucket(level, hi); hi = hi - 1 end
    if lo > hi then break end
    lo, hi, level = lo / RADIX, (hi + 1) / RADIX - 1, level + 1
  end
  return fields
end

local function sum(key, fields)
  if #fields == 0 then return 0 end
  local total = 0
  for _, v in ipairs(redis.call('HMGET', key, unpack(fields))) do
    if v then total = total + tonumber(v) end
  end
  return total
end

-- submit(P; id1, cents1, id2, cents2, ...) -> {new, duplicates, backlog}
local function submit(keys, args)
  local P = keys[1]
  local new, dup = 0, 0
  local now = now_ms()
  for i = 1, #args, 2 do
    if redis.call('HSETNX', P .. 'pay', args[i], fresh(args[i + 1], now)) == 1 then
      enqueue(P, args[i], false)
      new = new + 1
    else
      dup = dup + 1
    end
  end
  if dup > 0 then redis.call('HINCRBY', P .. 'n', 'duplicates', dup) end
  if new > 0 then redis.call('PUBLISH', P .. 'work', '1') end
  return {new, dup, backlog(P)}
end

-- take(P; holder, limit, lease_ms) -> {ms until the next delayed payment is due
-- (-1: none), id, amount, check, lease, id, amount, check, lease, ...}
-- (lease: lease_of, which is also the payment's attempts)
local function take(keys, args)
  local P, holder, limit, lease_ms = keys[1], args[1], tonumber(args[2]), tonumber(args[3])
  local now = now_ms()
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', now, 'LIMIT', 0, 1000)) do
    redis.call('ZREM', P .. 'delayed', id)
    local raw = redis.call('HGET', P .. 'pay', id)
    if raw then
      local r = parse(raw)
      if r.s == DELAYED then
        r.s = QUEUED
        redis.call('HSET', P .. 'pay', id, pack(r))
        enqueue(P, id, false)
      end
    end
  end
  local out = {-1}
  local popped = redis.call('ZPOPMIN', P .. 'queue', limit)
  for i = 1, #popped, 2 do
    local id = popped[i]
    local r = parse(redis.call('HGET', P .. 'pay', id))
    r.s = LEASED
    redis.call('HSET', P .. 'pay', id, pack(r))
    redis.call('ZADD', P .. 'leases', now + lease_ms, id)
    redis.call('HSET', P .. 'held', id, holder)
    out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4] = id, r.a, r.c, lease_of(r)
  end
  local first = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
  if #first > 0 then out[1] = math.max(0, tonumber(first[2]) - now) end
  return out
end

-- Charged in an earlier life of its id (services/cache/store.py): requestedAt
-- older than this life's acceptance by more than half the retention.
local function expired_duplicate(r, t, retention)
  local accepted = tonumber(r.at)
  return retention > 0 and accepted > 0 and tonumber(t) < accepted - math.floor(retention / 2)
end

-- complete(P; retention_ms, id, processor, cents, requestedAt, ...) -> {recorded, ignored}
local function complete(keys, args)
  local P, retention = keys[1], tonumber(args[1])
  local now = now_ms()
  local recorded, ignored, late, again = 0, 0, 0, 0
  for i = 2, #args, 4 do
    local id, processor, amount, t = args[i], args[i + 1], args[i + 2], args[i + 3]
    local raw = redis.call('HGET', P .. 'pay', id)
    local r = raw and parse(raw)
    if not r or r.s == DONE or not IS_PROCESSOR[processor] then
      ignored = ignored + 1
    else
      if r.s == LEASED then
        unlease(P, id)
      elseif r.s == REJECTED then  -- an earlier attempt landed after all
        late = late + 1
        redis.call('HINCRBY', P .. 'n', 'rejected', -1)
        redis.call('HDEL', P .. 'why', id)
      else
        late = late + 1
        redis.call('ZREM', P .. (r.s == QUEUED and 'queue' or 'delayed'), id)
      end
      if expired_duplicate(r, t, retention) then
        again = again + 1
      else
        ledger_add(P, processor, t, amount)
      end
      r.s, r.a, r.c, r.p, r.t = DONE, amount, '-', processor, t
      redis.call('HSET', P .. 'pay', id, pack(r))
      redis.call('ZADD', P .. 'done', now, id)
      recorded = recorded + 1
    end
  end
  if recorded > 0 then redis.call('HINCRBY', P .. 'n', 'done', recorded) end
  if late > 0 then redis.call('HINCRBY', P .. 'n', 'late', late) end
  if again > 0 then redis.call('HINCRBY', P .. 'n', 'expired_duplicates', again) end
  return {recorded, ignored}
end

-- requeue(P; id, check, delay_ms, lease (-1: whichever is current), ...) -> handed back
local function requeue(keys, args)
  local P = keys[1]
  local now = now_ms()
  local count, stale = 0, 0
  for i = 1, #args, 4 do
    local id, check, delay, lease = args[i], args[i + 1], tonumber(args[i + 2]), tonumber(args[i + 3])
    local raw = redis.call('HGET', P .. 'pay', id)
    local r = raw and parse(raw)
    if r and r.s == LEASED then
      if lease >= 0 and lease ~= lease_of(r) then
        stale = stale + 1
      else
        unlease(P, id)
        r.c, r.n = check, r.n + 1  -- one more return: the next lending is under a new lease
        if delay > 0 then
          r.s = DELAYED
          redis.call('ZADD', P .. 'delayed', now + delay, id)
        else
          r.s = QUEUED
          enqueue(P, id, false)
        end
        redis.call('HSET', P .. 'pay', id, pack(r))
        count = count + 1
      end
    end
  end
  if count > 0 then
    redis.call('HINCRBY', P .. 'n', 'requeued', count)
    redis.call('PUBLISH', P .. 'work', '1')
  end
  if stale > 0 then redis.call('HINCRBY', P .. 'n', 'stale', stale) end
  return count
end

-- reject(P; id, processor, reason, lease, ...) -> parked
local function reject(keys, args)
  local P = keys[1]
  local count, stale = 0, 0
  for i = 1, #args, 4 do
    local id, processor, reason, lease = args[i], args[i + 1], args[i + 2], tonumber(args[i + 3])
    local raw = redis.call('HGET', P .. 'pay', id)
    local r = raw and parse(raw)
    if r and r.s == LEASED then
      if lease ~= lease_of(r) then
        stale = stale + 1
      else
        unlease(P, id)
        r.s, r.c, r.p = REJECTED, '-', processor
        redis.call('HSET', P .. 'pay', id, pack(r))
        redis.call('HSET', P .. 'why', id, reason)
        count = count + 1
      end
    end
  end
  if count > 0 then redis.call('HINCRBY', P .. 'n', 'rejected', count) end
  if stale > 0 then redis.call('HINCRBY', P .. 'n', 'stale', stale) end
  return count
end

-- revive(P; id) -> the state afterwards (1: queued again), 0 if unknown
local function revive(keys, args)
  local P, id = keys[1], args[1]
  local raw = redis.call('HGET', P .. 'pay', id)
  if not raw then return 0 end
  local r = parse(raw)
  if r.s ~= REJECTED then return r.s end
  r.s, r.c, r.p, r.n = QUEUED, '-', '-', r.n + 1  -- reports about the refused lease are stale
  redis.call('HSET', P .. 'pay', id, pack(r))
  redis.call('HDEL', P .. 'why', id)
  redis.call('HINCRBY', P .. 'n', 'rejected', -1)
  enqueue(P, id, false)
  redis.call('PUBLISH', P .. 'work', '1')
  return QUEUED
end

-- Forget at most EXPIRE_BATCH ids processed more than retention ms ago: out
-- of "pay" (and "done"), the ledger untouched; "done" counts down with them so
-- the backlog stays exact.
local function forget_processed(P, now, retention)
  if retention <= 0 then return end
  local due = redis.call('ZRANGEBYSCORE', P .. 'done', '-inf', string.format('(%d', now - retention),
                         'LIMIT', 0, EXPIRE_BATCH)
  if #due == 0 then return end
  redis.call('HDEL', P .. 'pay', unpack(due))
  redis.call('ZREM', P .. 'done', unpack(due))
  redis.call('HINCRBY', P .. 'n', 'done', -#due)
  redis.call('HINCRBY', P .. 'n', 'forgotten', #due)
end

-- expire(P; retention_ms) -> leases brought back (run-out ones, and every lease
-- of a consumer whose heartbeat lapsed at least its settle time ago); also
-- forgets processed ids past the retention (forget_processed)
local function expire(keys, args)
  local P = keys[1]
  local now = now_ms()
  local count = 0
  forget_processed(P, now, tonumber(args[1] or '0'))
  local gone = redis.call('ZRANGEBYSCORE', P .. 'reap', '-inf', now)
  if #gone > 0 then
    local is_gone = {}
    for _, consumer in ipairs(gone) do
      is_gone[consumer] = true
      redis.call('ZREM', P .. 'reap', consumer)
      redis.call('ZREM', P .. 'alive', consumer)
      redis.call('HDEL', P .. 'settle', consumer)
      redis.call('HDEL', P .. 'cstats', consumer)
    end
    local held = redis.call('HGETALL', P .. 'held')
    for i = 1, #held, 2 do
      if is_gone[held[i + 1]] then count = count + expire_one(P, held[i]) end
    end
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now, 'LIMIT', 0, 1000)) do
    count = count + expire_one(P, id)
  end
  if count > 0 then redis.call('PUBLISH', P .. 'work', '1') end
  return count
end

local function health_of(P)
  local out = {}
  for _, processor in ipairs(PROCESSORS) do
    local raw = redis.call('HGET', P .. 'health', processor) or '0 0 0'
    local failing, mrt, at = string.match(raw, '^(%d) (%d+) (%d+)$')
    out[#out + 1] = {processor, tonumber(failing), tonumber(mrt), tonumber(at)}
  end
  return out
end

local function poller_of(P, processor)
  local raw = redis.call('HGET', P .. 'poller', processor)
  if not raw then return nil end
  local consumer, token, untl = string.match(raw, '^(%S+) (%d+) (%d+)$')
  return {consumer = consumer, token = tonumber(token), untl = tonumber(untl)}
end

local function set_poller(P, processor, consumer, token, untl)
  redis.call('HSET', P .. 'poller', processor,
             consumer .. ' ' .. string.format('%d %d', token, untl))
end

-- heartbeat(P; consumer, ttl_ms, settle_ms, leaving (0/1), stats)
--   -> {{processor, token}, ...} (the processors it polls), health_of(P)
local function heartbeat(keys, args)
  local P, consumer = keys[1], args[1]
  local ttl, settle, leaving, stats = tonumber(args[2]), tonumber(args[3]), args[4] == '1', args[5]
  local now = now_ms()
  settle = math.max(settle, tonumber(redis.call('HGET', P .. 'settle', consumer) or '0'))
  local alive_until = leaving and now or now + ttl
  redis.call('ZADD', P .. 'alive', alive_until, consumer)
  redis.call('ZADD', P .. 'reap', alive_until + settle, consumer)
  redis.call('HSET', P .. 'settle', consumer, settle)
  redis.call('HSET', P .. 'cstats', consumer, stats)
  local leads = {}
  for _, processor in ipairs(PROCESSORS) do
    local lease = poller_of(P, processor)
    if leaving then
      if lease and lease.consumer == consumer then redis.call('HDEL', P .. 'poller', processor) end
    elseif not lease or lease.untl <= now then  -- free: won, under a new token
      local token = redis.call('HINCRBY', P .. 'n', 'tokens', 1)
      set_poller(P, processor, consumer, token, now + ttl)
      leads[#leads + 1] = {processor, token}
    elseif lease.consumer == consumer then
      set_poller(P, processor, consumer, lease.token, now + ttl)
      leads[#leads + 1] = {processor, lease.token}
    end
  end
  return {leads, health_of(P)}
end

local function is_poller(P, processor, token, now)
  local lease = poller_of(P, processor)
  return lease ~= nil and lease.token == token and lease.untl > now
end

-- claim_poll(P; processor, token, interval_ms) -> 0 (go), ms to wait, or -1 (not the poller)
local function claim_poll(keys, args)
  local P, processor, token, interval = keys[1], args[1], tonumber(args[2]), tonumber(args[3])
  local now = now_ms()
  if not is_poller(P, processor, token, now) then return -1 end
  local next_at = tonumber(redis.call('HGET', P .. 'nextpoll', processor) or '0')
  if next_at > now then return next_at - now end
  redis.call('HSET', P .. 'nextpoll', processor, now + interval)
  return 0
end

-- report_health(P; processor, token, answered (0/1), failing (0/1), mrt, retry_after_ms) -> 1/0
local function report_health(keys, args)
  local P, processor, token = keys[1], args[1], tonumber(args[2])
  local now = now_ms()
  if not is_poller(P, processor, token, now) then return 0 end
  if args[3] == '1' then
    redis.call('HSET', P .. 'health', processor,
               args[4] .. ' ' .. string.format('%d %d', tonumber(args[5]), now))
  end
  local retry_after = tonumber(args[6])
  if retry_after > 0 then
    local next_at = tonumber(redis.call('HGET', P .. 'nextpoll', processor) or '0')
    redis.call('HSET', P .. 'nextpoll', processor, math.max(next_at, now + retry_after))
  end
  return 1
end

-- totals(P; lo_ms, hi_ms) -> {count, amount} per processor, in PROCESSORS' order
local function totals(keys, args)
  local P = keys[1]
  local lo, hi = math.max(0, tonumber(args[1])), math.min(TOP, tonumber(args[2]))
  local fields = window_fields(lo, hi)
  local out = {}
  for _, processor in ipairs(PROCESSORS) do
    out[#out + 1] = sum(P .. 'lc:' .. processor, fields)
    out[#out + 1] = sum(P .. 'la:' .. processor, fields)
  end
  return out
end

-- lookup(P; id) -> {the record, why it was rejected ('' if it was not)}, or nil
local function lookup(keys, args)
  local raw = redis.call('HGET', keys[1] .. 'pay', args[1])
  if not raw then return nil end
  return {raw, redis.call('HGET', keys[1] .. 'why', args[1]) or ''}
end

-- purge(P) -> payments forgotten. Consumers, pollers and health stay: they
-- are not payments, and the running consumers would only have to rebuild them.
local function purge(keys, args)
  local P = keys[1]
  local count = redis.call('HLEN', P .. 'pay')
  local doomed = {'pay', 'done', 'why', 'queue', 'delayed', 'leases', 'held', 'head', 'tail'}
  for _, processor in ipairs(PROCESSORS) do
    doomed[#doomed + 1] = 'lc:' .. processor
    doomed[#doomed + 1] = 'la:' .. processor
  end
  for i, name in ipairs(doomed) do doomed[i] = P .. name end
  redis.call('UNLINK', unpack(doomed))
  redis.call('HDEL', P .. 'n', 'done', 'duplicates', 'requeued', 'stale', 'late', 'rejected',
             'expired_duplicates', 'forgotten')
  return count
end

-- stats(P) -> {queued, delayed, leased, backlog, requeued, duplicates, stale,
-- late, rejected, health_of(P), {the stats of each live consumer}, expired_duplicates}
local function stats(keys, args)
  local P = keys[1]
  local now = now_ms()
  local n = redis.call('HMGET', P .. 'n', 'done', 'requeued', 'duplicates', 'stale', 'late', 'rejected',
                       'expired_duplicates')
  for i = 1, #n do n[i] = tonumber(n[i] or '0') end
  local live = redis.call('ZRANGEBYSCORE', P .. 'alive', string.format('(%d', now), '+inf')
  local blobs = {}
  if #live > 0 then
    for _, blob in ipairs(redis.call('HMGET', P .. 'cstats', unpack(live))) do
      blobs[#blobs + 1] = blob or ''
    end
  end
  return {redis.call('ZCARD', P .. 'queue'), redis.call('ZCARD', P .. 'delayed'),
          redis.call('ZCARD', P .. 'leases'), redis.call('HLEN', P .. 'pay') - n[1] - n[6],
          n[2], n[3], n[4], n[5], n[6], health_of(P), blobs, n[7]}
end

redis.register_function('rinha_submit', submit)
redis.register_function('rinha_take', take)
redis.register_function('rinha_complete', complete)
redis.register_function('rinha_requeue', requeue)
redis.register_function('rinha_reject', reject)
redis.register_function('rinha_revive', revive)
redis.register_function('rinha_expire', expire)
redis.register_function('rinha_heartbeat', heartbeat)
redis.register_function('rinha_claim_poll', claim_poll)
redis.register_function('rinha_report_health', report_health)
redis.register_function{function_name = 'rinha_totals', callback = totals, flags = {'no-writes'}}
redis.register_function{function_name = 'rinha_lookup', callback = lookup, flags = {'no-writes'}}
redis.register_function('rinha_purge', purge)
redis.register_function{function_name = 'rinha_stats', callback = stats, flags = {'no-writes'}}
