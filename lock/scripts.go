package lock

import "github.com/redis/go-redis/v9"

// Every script receives, per resource i, three keys that share one hash tag:
//
//	KEYS[3i-2] -> lock key (value: the holder's token)
//	KEYS[3i-1] -> fencing counter (persistent)
//	KEYS[3i]   -> FIFO of waiters (sorted set scored by arrival time in µs)
//
// and ARGV[1] -> token, ARGV[2] -> '1' when a hand-off must reach a
// subscriber to count, '0' where PUBLISH cannot tell (Redis Cluster).
//
// A waiter's entry is "token|channel|ttl ms|wait ms". A hand-off pops entries
// until one is live (arrived less than wait ms ago) and its Locker is still
// subscribed (PUBLISH reaches someone), sets the lock to its token with its
// TTL and publishes "token|fence|lock key" to its Locker's channel. A dead
// process is skipped at once because its subscription closed with it.
//
// The fence is an INCR of a counter that never expires: one small string
// per resource ever locked. A missing counter (first use, or lost with
// Redis's data after a restart without persistence or a failover) starts at
// the server time in µs. A counter started at time T0 and bumped once per
// acquisition stays below the clock unless it averaged more than one
// acquisition per µs, so a restarted counter still exceeds every fence
// handed out before, as long as the server clock does not step back.
const prelude = `
local now_us
local function now()
  if not now_us then
    local t = redis.call('TIME')
    now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return now_us
end

local function bump(fk)
  local f = redis.call('INCR', fk)
  if f == 1 then
    f = now()
    redis.call('SET', fk, string.format('%.0f', f))
  end
  return f
end

local function handoff(lk, fk, qk)
  while true do
    local e = redis.call('ZPOPMIN', qk)
    if #e == 0 then return nil end
    local tok, ch, ttl, wait = string.match(e[1], '^([^|]+)|([^|]+)|(%d+)|(%d+)$')
    if tok and now() - tonumber(e[2]) <= tonumber(wait) * 1000 then
      if tok == ARGV[1] then return tok end
      local f = bump(fk)
      redis.call('SET', lk, tok, 'PX', ttl)
      if ARGV[2] == '0' or redis.call('PUBLISH', ch, tok .. '|' .. string.format('%.0f', f) .. '|' .. lk) > 0 then
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
//	ARGV[3] -> ttl ms  ARGV[4] -> wait ms (0: try once, all or none)
//	ARGV[5] -> the caller's channel (when waiting)
//
// Returns {1, fence...}: every resource acquired, or
// {0, i, pttl, owner, fence...}: resource i is held by another for pttl ms
// more (owner: what follows the first ':' of its token, or ”);
// when waiting, the resources before i are acquired (their fences follow)
// and the caller is queued on resource i.
var acquireScript = redis.NewScript(prelude + `
local token, ttl, wait = ARGV[1], ARGV[3], tonumber(ARGV[4])
local n = #KEYS / 3
if n == 1 and redis.call('EXISTS', KEYS[3]) == 0 and redis.call('SET', KEYS[1], token, 'NX', 'PX', ttl) then
  return {1, bump(KEYS[2])}
end
local mine, busy, pttl, owner = {}, nil, 0, ''
for i = 1, n do
  local lk = KEYS[3*i-2]
  local holder = redis.call('GET', lk)
  if holder == token then
    mine[i] = true
  elseif not holder then
    holder = handoff(lk, KEYS[3*i-1], KEYS[3*i])
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
  local lk, fk = KEYS[3*i-2], KEYS[3*i-1]
  if mine[i] then fences[i] = tonumber(redis.call('GET', fk)) else fences[i] = bump(fk) end
  redis.call('SET', lk, token, 'PX', ttl)
end
if not busy then return {1, unpack(fences)} end
if wait > 0 then
  local qk = KEYS[3*busy]
  redis.call('ZADD', qk, 'NX', now(), token .. '|' .. ARGV[5] .. '|' .. ttl .. '|' .. ARGV[4])
  if redis.call('PTTL', qk) < wait then redis.call('PEXPIRE', qk, wait) end
end
return {0, busy, pttl, owner, unpack(fences)}
`)

// releaseScript deletes each lock the token still holds and hands it to the
// next live waiter. It also drops the caller's own queue entry, which is how
// a waiter that gives up leaves the line.
//
//	ARGV[3] -> the caller's queue entry, or ''
//
// Returns the number of resources the token still held.
var releaseScript = redis.NewScript(prelude + `
local released = 0
for i = 1, #KEYS / 3 do
  local lk, qk = KEYS[3*i-2], KEYS[3*i]
  if ARGV[3] ~= '' then redis.call('ZREM', qk, ARGV[3]) end
  if redis.call('GET', lk) == ARGV[1] then
    redis.call('DEL', lk)
    handoff(lk, KEYS[3*i-1], qk)
    released = released + 1
  end
end
return released
`)

// extendScript resets the TTL of every lock the token still holds.
//
//	KEYS[i] -> lock key
//	ARGV[1] -> token  ARGV[2] -> ttl ms
//
// Returns the number of locks the token still held.
var extendScript = redis.NewScript(`
local held = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    held = held + 1
  end
end
return held
`)
