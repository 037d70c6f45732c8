package lock

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// fenceRetention is how long a fence counter outlives the last
// acquisition of its resource; fenceRetentionMS is the same in
// milliseconds, as the scripts take it (a test checks they agree).
const (
	fenceRetention   = 30 * 24 * time.Hour
	fenceRetentionMS = "2592000000"
)

// The acquire and release scripts receive, per resource i, four keys that
// share one hash tag:
//
//	KEYS[4i-3] -> lock key (value: the holder's token)
//	KEYS[4i-2] -> fencing counter (expires fenceRetention after its last bump)
//	KEYS[4i-1] -> FIFO of waiters (sorted set scored by arrival time in µs)
//	KEYS[4i]   -> wanted mark (see Locker.Want)
//
// and ARGV[1] -> token, ARGV[2] -> '1' when a hand-off must reach a
// subscriber to count, '0' where PUBLISH cannot tell (Redis Cluster).
//
// A waiter's entry is "token|channel|ttl ms|wait ms". A hand-off pops entries
// until one is live (arrived less than wait ms ago) and its Locker is still
// subscribed (PUBLISH reaches someone), sets the lock to its token with its
// TTL and publishes "token|fence|lock key" to the entry's channel: its
// Locker's one channel, or on Redis Cluster its Locker's channel for the
// resource's slot, which has a hash tag, with SPUBLISH (shardsub.go). A dead
// process is skipped at once because its subscription closed with it. A
// waiter on the releasing Locker's own channel (here) is alive by
// definition: the grant goes back to the caller instead, one hop shorter.
//
// The fence is max(INCRBY of the counter by fenceStride, server time in
// µs), written back, on a counter that expires fenceRetention after the
// resource was last taken, so that resources locked once do not keep a
// key forever. An expired counter restarts from the clock: every fence
// handed out was at most its moment's clock plus a cohort's passes, or
// the counter where it ran ahead of the clock, which it does only while
// one resource is taken more than once per 64 µs, and by no more than
// that excess; so the fence after an expiry exceeds them all unless the
// counter had run more than fenceRetention ahead. A lease held, refreshed,
// for longer than that outlives its counter: Holding then shows no fence. The stride leaves room for the fences of a
// cohort's passes (cohort.go), which count up from the fence Redis gave.
// After a restart or a failover that lost recent writes the counter comes
// back missing or stale (a replica that never saw the last bumps), not
// ahead; but every fence handed out was at most the clock of its moment,
// plus a cohort's passes (or the counter, which runs ahead of the clock
// only while acquisitions average more than one per 64 µs), so the next
// fence, at least the clock of a later moment, exceeds them all, as long
// as the servers' clocks do not step back by more than the time a
// failover takes. The price is a TIME and a SET in every bump.
const prelude = `
local retention = ` + fenceRetentionMS + `
local now_us
local function now()
  if not now_us then
    local t = redis.call('TIME')
    now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return now_us
end

local function bump(fk)
  local f = redis.call('INCRBY', fk, 64)
  if f < now() then
    f = now()
    redis.call('SET', fk, string.format('%.0f', f), 'PX', retention)
  else
    redis.call('PEXPIRE', fk, retention)
  end
  return f
end

local function handoff(lk, fk, qk, here)
  local popped = false
  while true do
    local e = redis.call('ZPOPMIN', qk)
    if #e == 0 then return nil, nil, popped end
    popped = true
    local tok, ch, ttl, wait = string.match(e[1], '^([^|]+)|([^|]+)|(%d+)|(%d+)$')
    if tok and now() - tonumber(e[2]) <= tonumber(wait) * 1000 then
      if tok == ARGV[1] then return tok end
      local f = bump(fk)
      redis.call('SET', lk, tok, 'PX', ttl)
      if ch == here then return tok, f end
      -- Publish first: 'or' would skip it where receivers cannot count.
      local msg, heard = tok .. '|' .. string.format('%.0f', f) .. '|' .. lk
      if string.find(ch, '{', 1, true) then
        -- A slot's channel on Cluster, in this slot: the grant stays in
        -- the shard. pcall: a bad entry must not fail the release.
        heard = redis.pcall('SPUBLISH', ch, msg)
        if type(heard) ~= 'number' then heard = 0 end
      else
        heard = redis.call('PUBLISH', ch, msg)
      end
      if ARGV[2] == '0' or heard > 0 then
        return tok
      end
      redis.call('DEL', lk)
    end
  end
end
`

// acquireScript takes all resources or, when waiting, the longest free
// prefix of them, and queues the caller on the first busy one.
//
// A single free resource is simply taken, without looking at its queue: a
// release always hands the resource to the queue's head, so a free
// resource has a queue only when its holder's TTL ran out, and then the
// head's retry at that TTL hands it on. A caller arriving in between gets
// ahead of the queue once, and the common case saves a call. A retry may
// itself be in the queue, and must leave it as it takes the resource: it
// goes the long way, through the hand-off.
//
//	ARGV[3] -> ttl ms  ARGV[4] -> wait ms (0: try once, all or none)
//	ARGV[5] -> the caller's channel (when waiting; on Cluster, for these keys' slot)
//	ARGV[6] -> present when the caller may be queued (a waiting retry)
//
// Returns {1, fence...}: every resource acquired, or
// {0, i, pttl, owner, fence...}: resource i is held by another for pttl ms
// more (owner: what follows the first ':' of its token, or ”);
// when waiting, the resources before i are acquired (their fences follow)
// and the caller is queued on resource i.
var acquireScript = redis.NewScript(prelude + `
local token, ttl, wait = ARGV[1], ARGV[3], tonumber(ARGV[4])
local n = #KEYS / 4
local first -- the holder the fast path found, saving the loop a GET
if n == 1 and not ARGV[6] then
  first = redis.call('SET', KEYS[1], token, 'NX', 'PX', ttl, 'GET')
  if not first then return {1, bump(KEYS[2])} end
end
local mine, busy, pttl, owner = {}, nil, 0, ''
for i = 1, n do
  local lk = KEYS[4*i-3]
  local holder = first or redis.call('GET', lk)
  first = nil
  if holder == token then
    mine[i] = true
  elseif not holder then
    holder = handoff(lk, KEYS[4*i-2], KEYS[4*i-1])
  end
  if holder and holder ~= token then
    busy, pttl = i, redis.call('PTTL', lk)
    owner = string.match(holder, '^[^:]*:(.*)$') or ''
    break
  end
end
local upto = n
if busy then upto = wait > 0 and busy - 1 or 0 end
local fences = {}
for i = 1, upto do
  local lk, fk = KEYS[4*i-3], KEYS[4*i-2]
  if mine[i] then fences[i] = tonumber(redis.call('GET', fk)) else fences[i] = bump(fk) end
  redis.call('SET', lk, token, 'PX', ttl)
end
if not busy then return {1, unpack(fences)} end
if wait > 0 then
  local qk = KEYS[4*busy-1]
  redis.call('ZADD', qk, 'NX', now(), token .. '|' .. ARGV[5] .. '|' .. ttl .. '|' .. ARGV[4])
  -- The queue lives as long as its longest wait: GT lengthens its TTL, and
  -- NX gives a new queue, which has none, its first.
  if redis.call('PEXPIRE', qk, wait, 'GT') == 0 then redis.call('PEXPIRE', qk, wait, 'NX') end
end
return {0, busy, pttl, owner, unpack(fences)}
`)

// releaseScript deletes each lock the token still holds and hands it to the
// next live waiter. It also drops the caller's own queue entry, which is how
// a waiter that gives up leaves the line.
//
//	ARGV[3] -> the caller's queue entry, or ''
//	ARGV[4] -> the caller's channel (on Cluster, for these keys' slot), or ''
//
// Returns {released, mark..., grant...}: the number of resources the token
// still held, then per resource the wanted mark that a released one
// carried, or an empty string, then "token, fence, lock key" for each
// resource handed to a waiter on the caller's own channel, which the
// caller passes on in-process.
var releaseScript = redis.NewScript(prelude + `
local n, released, marks, grants = #KEYS / 4, 0, {}, {}
for i = 1, n do
  local lk, qk, wk = KEYS[4*i-3], KEYS[4*i-1], KEYS[4*i]
  marks[i] = ''
  if ARGV[3] ~= '' then redis.call('ZREM', qk, ARGV[3]) end
  if redis.call('GET', lk) == ARGV[1] then
    released = released + 1
    -- Most releases find neither a queue nor a mark: one call tells.
    local found = redis.call('EXISTS', qk, wk)
    local tok, f, popped
    if found > 0 then
      tok, f, popped = handoff(lk, KEYS[4*i-2], qk, ARGV[4])
      if f then
        grants[#grants+1], grants[#grants+2], grants[#grants+3] = tok, f, lk
      end
      -- One of the two was there; read the mark unless it was the queue.
      if found == 2 or not (tok or popped) then marks[i] = redis.call('GET', wk) or '' end
    end
    -- A hand-off has overwritten the lock with the next holder's token.
    if not tok or tok == ARGV[1] then redis.call('DEL', lk) end
  end
end
local out = {released}
for i = 1, n do out[#out+1] = marks[i] end
for _, g in ipairs(grants) do out[#out+1] = g end
return out
`)

// wantScript marks a resource as wanted by a caller outside its queue,
// when it is held. The mark is a fresh random value each time, so that
// clearing it can be made conditional on nobody having marked it since.
//
//	KEYS[1] -> lock key  KEYS[2] -> wanted mark
//	ARGV[1] -> the mark  ARGV[2] -> the mark's lifetime, ms
//
// Returns 1 when the resource is held (and now marked), else 0.
var wantScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
`)

// unwantScript clears a wanted mark unless it changed.
//
//	KEYS[1] -> wanted mark  ARGV[1] -> the mark seen
var unwantScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// extendScript resets the TTL of every lock when the token still holds
// them all, and changes nothing otherwise: a lease that lost one resource
// has ended, and must not keep the others longer.
//
//	KEYS[i] -> lock key
//	ARGV[1] -> token  ARGV[2] -> ttl ms (1 or more: PEXPIRE 0 deletes)
//
// Returns the number of locks extended: all of them, or 0.
var extendScript = redis.NewScript(`
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then return 0 end
end
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return #KEYS
`)
