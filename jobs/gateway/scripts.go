package gateway

import "github.com/redis/go-redis/v9"

// moveScript records one capture or refund, or returns the payment its
// idempotency key already recorded. Doing the lookup, the rules and the
// writes in one script is what makes a key move money at most once, and
// keeps refunds within captures under any number of concurrent callers.
// Its keys are all the order's, in one Redis Cluster slot; a key used with
// another order is refused before the script runs (Simulator.claim).
//
//	KEYS[1] -> the idempotency key's record under the order (hash: id order kind amount currency at)
//	KEYS[2] -> the order's totals (hash: captured refunded currency)
//	KEYS[3] -> the order's payment IDs in record order (list)
//	KEYS[4] -> the order's idempotency keys by payment ID (hash)
//	ARGV[1] -> new payment ID  ARGV[2] -> order ID  ARGV[3] -> kind
//	ARGV[4] -> amount (decimal)  ARGV[5] -> currency  ARGV[6] -> idempotency key
//
// Returns {'recorded' or 'replayed', id, order, kind, amount, currency, at µs},
// {'reused', order, kind, amount, currency} with the first call's parameters,
// {'currency', the order's currency}, or {'exceeds', refundable amount}.
//
// Amounts are compared as Lua numbers (doubles), exact up to 2^53; the totals
// are kept by HINCRBY as 64-bit integers.
var moveScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'id', 'order', 'kind', 'amount', 'currency', 'at')
if rec[1] then
  if rec[2] ~= ARGV[2] or rec[3] ~= ARGV[3] or rec[4] ~= ARGV[4] or rec[5] ~= ARGV[5] then
    return {'reused', rec[2] or '', rec[3] or '', rec[4] or '', rec[5] or ''}
  end
  return {'replayed', rec[1], rec[2], rec[3], rec[4], rec[5], rec[6]}
end
local t = redis.call('HMGET', KEYS[2], 'captured', 'refunded', 'currency')
local captured, refunded = tonumber(t[1]) or 0, tonumber(t[2]) or 0
if t[3] and t[3] ~= ARGV[5] then
  return {'currency', t[3]}
end
if ARGV[3] == 'refund' and tonumber(ARGV[4]) > captured - refunded then
  return {'exceeds', string.format('%.0f', captured - refunded)}
end
local now = redis.call('TIME')
local at = now[1] .. string.format('%06d', tonumber(now[2]))
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'order', ARGV[2], 'kind', ARGV[3],
  'amount', ARGV[4], 'currency', ARGV[5], 'at', at)
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[6])
if ARGV[3] == 'capture' then
  redis.call('HINCRBY', KEYS[2], 'captured', ARGV[4])
  redis.call('HSETNX', KEYS[2], 'currency', ARGV[5])
else
  redis.call('HINCRBY', KEYS[2], 'refunded', ARGV[4])
end
return {'recorded', ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], at}
`)
