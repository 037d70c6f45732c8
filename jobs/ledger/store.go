package ledger

import (
	"cmp"
	"context"
	"crypto/sha1" //nolint:gosec // G505: Redis scripts offer sha1hex; it compares, it protects nothing
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultPrefix starts every key the Store writes. The keys of one event
// share a hash tag, so one Commit can touch any of them on Redis Cluster,
// and different events spread over the cluster (see events.go).
const DefaultPrefix = "turnstile:ledger:"

// Cache sizes: ticket types are few; orders are many, and an evicted one
// costs one GET.
const (
	typeCacheSize  = 1 << 12
	orderCacheSize = 1 << 16
)

// Store is the ledger in Redis. It is safe for concurrent use.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	// typeEvents and orderEvents cache the directory and the order index,
	// which never change once written.
	typeEvents, orderEvents *eventCache
	// history is told of every fenced read and commit (see WithHistory).
	history History
	// mutants swaps scripts for broken ones, in tests only (export_test.go):
	// they show that the history checker catches a store that is wrong.
	mutants map[*redis.Script]*redis.Script
}

// New returns a Store in rdb under prefix (DefaultPrefix if empty).
func New(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{
		rdb: rdb, prefix: cmp.Or(prefix, DefaultPrefix),
		typeEvents: newEventCache(typeCacheSize), orderEvents: newEventCache(orderCacheSize),
	}
}

// commitScript checks every fence, then that what the change was
// computed from is still there, then writes the change.
//
//	KEYS[1] -> order number counter  KEYS[2] -> set of order IDs
//	KEYS[3] -> outbox (hash id -> notification)  KEYS[4] -> the order's pending outbox set
//	KEYS[5] -> the order, or the counter again when there is none
//	KEYS[6 .. 5+nf] -> fence keys  KEYS[6+nf .. 5+nf+na] -> ticket type hashes
//	KEYS[6+nf+na] -> the event's due revokes (sorted set: order ID by ms)
//	KEYS[7+nf+na] -> the event's undelivered orders (sorted set: order ID by ms)
//	ARGV[1] -> nf  ARGV[2] -> na  ARGV[3 .. 2+nf] -> tokens
//	ARGV[3+nf .. 2+nf+na] -> available counts
//	ARGV[3+nf+na .. 2+nf+2na] -> the counts they were computed from, or ''
//	then, from o = 2+nf+2na: ARGV[o+1] -> the order as JSON, or ''
//	ARGV[o+2] -> its ID  ARGV[o+3] -> the event's number prefix
//	ARGV[o+4] -> when the order is due for its revoke, unix ms, or ''
//	ARGV[o+5] -> SHA-1 of the order's JSON as it was read, or ''
//	ARGV[o+6] -> now, unix ms  ARGV[o+7 ..] -> outbox pairs: id, JSON
//
// All keys are of one event. A fence key holds the highest token the store
// has seen for its resource, in a fenced read or a commit. An order whose
// JSON has an empty number gets the event's next one. Returns that number
// (empty when the order had one or there is none), or an error reply
// "STALE <i>" naming the first stale fence, or "CHANGED <i>" naming the
// first ticket type (0: the order) that is not what it was read as. A
// notification recorded for the first time is pending for its order, and
// the order is undelivered from now on unless it already was since
// earlier (ZADD NX: a sweep looks for the oldest).
var commitScript = redis.NewScript(`
local nf, na = tonumber(ARGV[1]), tonumber(ARGV[2])
local o = 2 + nf + 2 * na
for i = 1, nf do
  local last = tonumber(redis.call('GET', KEYS[5 + i]) or '0')
  if tonumber(ARGV[2 + i]) < last then
    return redis.error_reply('STALE ' .. i)
  end
end
for i = 1, na do
  local was = ARGV[2 + nf + na + i]
  if was ~= '' and redis.call('HGET', KEYS[5 + nf + i], 'available') ~= was then
    return redis.error_reply('CHANGED ' .. i)
  end
end
if ARGV[o + 5] ~= '' then
  local cur = redis.call('GET', KEYS[5])
  if not cur or redis.sha1hex(cur) ~= ARGV[o + 5] then return redis.error_reply('CHANGED 0') end
end
for i = 1, nf do
  local last = tonumber(redis.call('GET', KEYS[5 + i]) or '0')
  if tonumber(ARGV[2 + i]) > last then redis.call('SET', KEYS[5 + i], ARGV[2 + i]) end
end
for i = 1, na do
  redis.call('HSET', KEYS[5 + nf + i], 'available', ARGV[2 + nf + i])
end
local number = ''
local order, id = ARGV[o + 1], ARGV[o + 2]
if order ~= '' then
  if string.find(order, '"number":""', 1, true) then
    number = ARGV[o + 3] .. string.format('%06d', redis.call('INCR', KEYS[1]))
    order = string.gsub(order, '"number":""', '"number":"' .. number .. '"', 1)
  end
  redis.call('SET', KEYS[5], order)
  redis.call('SADD', KEYS[2], id)
  if ARGV[o + 4] ~= '' then
    redis.call('ZADD', KEYS[6 + nf + na], ARGV[o + 4], id)
  else
    redis.call('ZREM', KEYS[6 + nf + na], id)
  end
end
for i = o + 7, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[3], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('SADD', KEYS[4], ARGV[i])
    if id ~= '' then redis.call('ZADD', KEYS[7 + nf + na], 'NX', ARGV[o + 6], id) end
  end
end
return number
`)

// Commit writes ch if every fence is at least the highest the store has
// seen for its resource, in a fenced read or a commit, and records each as
// the new highest. It returns an error wrapping ErrStaleFence, which names
// the resource, and writes nothing, when one is not. The order, if any, is
// given its event's next number: "TS-000042" in the default event,
// "TS-<event>-000042" in another, so numbers are unique across events.
//
// Everything a change touches must be of one event: the order's (Order.Event)
// and that of each ticket type in Available; a change that spans events is
// refused with an error wrapping ErrOtherEvent. So is a new order (one
// without a Number) whose ID another event's order has taken: the jobs find
// an order's event by its ID alone.
//
// With fences, Commit also refuses, with an error wrapping ErrChanged, a
// change whose order (one read from the Store) or available counts
// (AvailableWas) are no longer what they were read as. Under the writer's
// lock nothing else changes them, so this catches a Redis that lost
// acknowledged writes (a crash under appendfsync everysec, a failover, a
// restart without persistence): the fences the lost read recorded went
// with them, and the commit would otherwise land on a state it was not
// computed from. A retry reads what stands now. Without fences nothing
// is checked: no lock, no protection, as jobs.Service.NoLock shows.
//
// Beyond that Commit checks nothing: the writer's lock makes its read,
// the work in between and this write exclusive, and the fences make a
// writer whose lock was taken over harmless, provided the writer read
// what it changes with the same fences (see Order).
func (s *Store) Commit(ctx context.Context, fences []Fence, ch Change) error {
	ev, err := s.changeEvent(ctx, ch)
	if err != nil {
		return err
	}
	if err := CheckEvent(ev); err != nil {
		return fmt.Errorf("ledger: commit: %w", err)
	}
	orderKey, orderID, orderJSON, orderRead := s.key(ev, "seq"), "", "", ""
	if ch.Order != nil {
		if len(fences) > 0 {
			orderRead = ch.Order.read
		}
		b, err := json.Marshal(ch.Order)
		if err != nil {
			return fmt.Errorf("ledger: commit: %w", err)
		}
		orderKey, orderID, orderJSON = s.key(ev, "order", ch.Order.ID), ch.Order.ID, string(b)
		if ch.Order.Number == "" {
			// Before the commit, so that a committed order is always
			// found; an index entry whose commit failed names an event
			// where the order is not, which reads as not found.
			if err := s.indexOrder(ctx, ch.Order); err != nil {
				return err
			}
		}
	}
	keys := []string{s.key(ev, "seq"), s.key(ev, "orders"), s.key(ev, "outbox"), s.key(ev, "pending", orderID), orderKey}
	args := []any{len(fences), len(ch.Available)}
	for _, f := range fences {
		keys = append(keys, s.key(ev, "fence", f.Resource))
	}
	for _, f := range fences {
		args = append(args, f.Token)
	}
	types := slices.Sorted(mapsKeys(ch.Available))
	for _, tt := range types {
		keys = append(keys, s.key(ev, "tt", tt))
	}
	for _, tt := range types {
		args = append(args, ch.Available[tt])
	}
	for _, tt := range types {
		was := ""
		if n, ok := ch.AvailableWas[tt]; ok && len(fences) > 0 {
			was = strconv.FormatInt(n, 10)
		}
		args = append(args, was)
	}
	keys = append(keys, s.key(ev, "revokes"), s.key(ev, "undelivered"))
	revokeAt := ""
	if !ch.RevokeAt.IsZero() {
		revokeAt = strconv.FormatInt(ch.RevokeAt.UnixMilli(), 10)
	}
	args = append(args, orderJSON, orderID, numberPrefix(ev), revokeAt, orderRead, time.Now().UnixMilli())
	for _, n := range ch.Outbox {
		b, err := json.Marshal(n)
		if err != nil {
			return fmt.Errorf("ledger: commit: %w", err)
		}
		args = append(args, n.ID, string(b))
	}
	number, err := s.runFenced(ctx, true, commitScript, fences, keys, args...).Text()
	if err != nil {
		if f, ok := staleFence(err, fences); ok {
			return errStale("commit", f)
		}
		if i, ok := changed(err); ok && i <= len(types) {
			what := "order " + orderID
			if i > 0 {
				what = "ticket type " + types[i-1]
			}
			return fmt.Errorf("ledger: commit: %s changed since it was read: %w", what, ErrChanged)
		}
		return fmt.Errorf("ledger: commit: %w", err)
	}
	if number != "" {
		ch.Order.Number = number
	}
	return nil
}

// staleFence returns the fence that a script's "STALE <i>" error reply
// names, and whether err was one.
func staleFence(err error, fences []Fence) (Fence, bool) {
	if err == nil {
		return Fence{}, false
	}
	i, ok := strings.CutPrefix(err.Error(), "STALE ")
	if !ok {
		return Fence{}, false
	}
	n, convErr := strconv.Atoi(i)
	if convErr != nil || n < 1 || n > len(fences) {
		return Fence{}, false
	}
	return fences[n-1], true
}

// changed returns the index that a commit's "CHANGED <i>" error reply
// names (0: the order; i: the i-th ticket type), and whether err was one.
func changed(err error) (int, bool) {
	if err == nil {
		return 0, false
	}
	i, ok := strings.CutPrefix(err.Error(), "CHANGED ")
	if !ok {
		return 0, false
	}
	n, convErr := strconv.Atoi(i)
	return n, convErr == nil && n >= 0
}

// errStale is the error of an op refused for f.
func errStale(op string, f Fence) error {
	return fmt.Errorf("ledger: %s: %s: fence %d: %w", op, f.Resource, f.Token, ErrStaleFence)
}

// fenceLua is the start of a fenced read: KEYS[1 .. #ARGV] are fence keys,
// ARGV their tokens. It refuses (error reply "STALE <i>", nothing written)
// a token lower than the highest the store has seen for its resource, and
// otherwise records each token as that highest. A read script appends what
// it reads from the keys after the fences.
const fenceLua = `
local last = {}
for i = 1, #ARGV do
  last[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tonumber(ARGV[i]) < last[i] then
    return redis.error_reply('STALE ' .. i)
  end
end
for i = 1, #ARGV do
  if tonumber(ARGV[i]) > last[i] then redis.call('SET', KEYS[i], ARGV[i]) end
end
`

// readOrderScript is a fenced GET of an order.
//
//	KEYS[1 .. nf] -> fence keys  KEYS[nf+1] -> the order
//	ARGV[1 .. nf] -> tokens
//
// Returns the order's JSON (nil when there is none), or "STALE <i>".
var readOrderScript = redis.NewScript(fenceLua + `
return redis.call('GET', KEYS[#ARGV + 1])
`)

// readTicketTypeScript is a fenced read of a ticket type.
//
//	KEYS[1 .. nf] -> fence keys  KEYS[nf+1] -> the ticket type's hash
//	ARGV[1 .. nf] -> tokens
//
// Returns {type JSON, available} (nils when there is none), or "STALE <i>".
var readTicketTypeScript = redis.NewScript(fenceLua + `
return redis.call('HMGET', KEYS[#ARGV + 1], 'type', 'available')
`)

// numberPrefix starts the order numbers of an event. An event has no '-'
// at its end and a number none at all, so the last '-' of a number splits
// them and two events never give the same number.
func numberPrefix(event string) string {
	if event == "" {
		return "TS-"
	}
	return "TS-" + event + "-"
}

// fencedRead runs a read script on key, in event's slot, after fences.
func (s *Store) fencedRead(ctx context.Context, script *redis.Script, event string, fences []Fence, key string) *redis.Cmd {
	keys := make([]string, 0, len(fences)+1)
	args := make([]any, 0, len(fences))
	for _, f := range fences {
		keys = append(keys, s.key(event, "fence", f.Resource))
		args = append(args, f.Token)
	}
	return s.runFenced(ctx, false, script, fences, append(keys, key), args...)
}

// readMark is what Commit compares an order's stored JSON with: the
// script's redis.sha1hex of it, so the JSON is not sent back whole.
func readMark(b []byte) string {
	sum := sha1.Sum(b) //nolint:gosec // G401: a checksum to compare with Redis's sha1hex, not a secret
	return hex.EncodeToString(sum[:])
}

func mapsKeys(m map[string]int64) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// AddTicketType creates a ticket type with all its capacity available, in
// its event. A type that exists is left as it is, in the event it has.
func (s *Store) AddTicketType(ctx context.Context, tt TicketType) error {
	if err := CheckEvent(tt.Event); err != nil {
		return fmt.Errorf("ledger: add ticket type %s: %w", tt.ID, err)
	}
	b, err := json.Marshal(tt)
	if err != nil {
		return fmt.Errorf("ledger: add ticket type: %w", err)
	}
	// The directory first: a type it names but whose keys a crash kept
	// from being written reads as not found until a retry writes them.
	if err := s.rdb.HSetNX(ctx, s.typesKey(), tt.ID, tt.Event).Err(); err != nil {
		return fmt.Errorf("ledger: add ticket type %s: %w", tt.ID, err)
	}
	ev, err := s.typeEvent(ctx, tt.ID)
	if err != nil {
		return err
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSetNX(ctx, s.key(ev, "tt", tt.ID), "type", b)
		p.HSetNX(ctx, s.key(ev, "tt", tt.ID), "available", tt.Capacity)
		p.SAdd(ctx, s.key(ev, "tts"), tt.ID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: add ticket type %s: %w", tt.ID, err)
	}
	return nil
}

// TicketType returns a ticket type and how many of it are available. With
// fences it is a fenced read, as Order describes: give it the fence of the
// inventory lock under which the count will be changed.
func (s *Store) TicketType(ctx context.Context, id string, fences ...Fence) (TicketType, int64, error) {
	ev, err := s.typeEvent(ctx, id)
	if err != nil {
		return TicketType{}, 0, err
	}
	var v []any
	if len(fences) == 0 {
		v, err = s.rdb.HMGet(ctx, s.key(ev, "tt", id), "type", "available").Result()
	} else {
		v, err = s.fencedRead(ctx, readTicketTypeScript, ev, fences, s.key(ev, "tt", id)).Slice()
		if f, ok := staleFence(err, fences); ok {
			return TicketType{}, 0, errStale("ticket type "+id, f)
		}
		if err == nil && len(v) != 2 {
			err = fmt.Errorf("read script returned %d values", len(v))
		}
	}
	if err != nil {
		return TicketType{}, 0, fmt.Errorf("ledger: ticket type %s: %w", id, err)
	}
	raw, ok := v[0].(string)
	if !ok {
		return TicketType{}, 0, fmt.Errorf("ledger: ticket type %s: %w", id, ErrNotFound)
	}
	var tt TicketType
	if err := json.Unmarshal([]byte(raw), &tt); err != nil {
		return TicketType{}, 0, fmt.Errorf("ledger: ticket type %s: %w", id, err)
	}
	avail, _ := v[1].(string)
	n, err := strconv.ParseInt(avail, 10, 64)
	if err != nil {
		return TicketType{}, 0, fmt.Errorf("ledger: ticket type %s: available %q: %w", id, avail, err)
	}
	return tt, n, nil
}

// TicketTypes returns the IDs of every ticket type, of every event, sorted.
func (s *Store) TicketTypes(ctx context.Context) ([]string, error) {
	return s.members(ctx, "tts", "ticket types")
}

// members returns the sorted union of an ID set kept per event.
func (s *Store) members(ctx context.Context, set, what string) ([]string, error) {
	events, err := s.events(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, ev := range events {
		part, err := s.rdb.SMembers(ctx, s.key(ev, set)).Result()
		if err != nil {
			return nil, fmt.Errorf("ledger: %s of event %q: %w", what, ev, err)
		}
		ids = append(ids, part...)
	}
	slices.Sort(ids)
	return ids, nil
}

// Order returns an order.
//
// With fences it is a fenced read, the one a writer must use for what it
// will change: like Commit it refuses, with an error wrapping
// ErrStaleFence, a token lower than the highest the store has seen for
// its resource, and it records the token as that highest, in the same
// atomic step as the read. From then on a commit by an older holder is
// refused, even one that read first: without that, an older holder that
// read before this one and commits in between would have its write
// silently overwritten by this one's, computed from a value that no
// longer stands (a lost update). A read without fences is for observers
// (Check, dashboards) that write nothing.
//
// Order finds the order's event by its ID, in an index that Commit wrote
// before the order's first commit (one GET, cached by the Store).
func (s *Store) Order(ctx context.Context, id string, fences ...Fence) (*Order, error) {
	ev, err := s.orderEvent(ctx, id)
	if err != nil {
		return nil, err
	}
	var b []byte
	if len(fences) == 0 {
		b, err = s.rdb.Get(ctx, s.key(ev, "order", id)).Bytes()
	} else {
		var text string
		text, err = s.fencedRead(ctx, readOrderScript, ev, fences, s.key(ev, "order", id)).Text()
		if f, ok := staleFence(err, fences); ok {
			return nil, errStale("order "+id, f)
		}
		b = []byte(text)
	}
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("ledger: order %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: order %s: %w", id, err)
	}
	var o Order
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, fmt.Errorf("ledger: order %s: %w", id, err)
	}
	o.read = readMark(b)
	return &o, nil
}

// Orders returns the IDs of every order, of every event, sorted. An event
// is known by its ticket types, so an order committed under an event that
// has none (Reserve never does that) is not listed.
func (s *Store) Orders(ctx context.Context) ([]string, error) {
	return s.members(ctx, "orders", "orders")
}

// deliverScript sends each pending notification of an order once: the
// first delivery of an ID appends it to the sent log, a later one only
// counts. It leaves the order's pending set empty, so the order is no
// longer undelivered.
//
//	KEYS[1] -> the order's pending set  KEYS[2] -> outbox
//	KEYS[3] -> sent log (list)  KEYS[4] -> deliveries per ID (hash)
//	KEYS[5] -> the event's undelivered orders (sorted set)
//	ARGV[1] -> the order's ID
//
// Returns how many it sent.
var deliverScript = redis.NewScript(`
local sent = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('HINCRBY', KEYS[4], id, 1) == 1 then
    redis.call('RPUSH', KEYS[3], redis.call('HGET', KEYS[2], id))
    sent = sent + 1
  end
  redis.call('SREM', KEYS[1], id)
end
redis.call('ZREM', KEYS[5], ARGV[1])
return sent
`)

// Deliver sends the order's pending notifications, each exactly once
// however often and however concurrently it is called, and returns how
// many it sent. Jobs call it after their locks are released, and
// jobs.Service.SweepOutbox for the orders Undelivered lists. It sends
// only what commits have written, so it never runs ahead of one, and what
// is pending goes out in no set order: when a second job on the order
// commits before the first one's delivery runs, one call sends both.
func (s *Store) Deliver(ctx context.Context, orderID string) (int, error) {
	ev, err := s.orderEvent(ctx, orderID)
	if err != nil {
		return 0, err
	}
	n, err := deliverScript.Run(ctx, s.rdb,
		[]string{s.key(ev, "pending", orderID), s.key(ev, "outbox"), s.key(ev, "sent"), s.key(ev, "deliveries"), s.key(ev, "undelivered")},
		orderID).Int()
	if err != nil {
		return 0, fmt.Errorf("ledger: deliver %s: %w", orderID, err)
	}
	return n, nil
}

// Outbox returns every notification recorded, of every event, with how
// many times each was delivered (0 while pending). Notification IDs name
// their order, so they are unique across events.
func (s *Store) Outbox(ctx context.Context) (map[string]Notification, map[string]int64, error) {
	events, err := s.events(ctx)
	if err != nil {
		return nil, nil, err
	}
	notes, delivered := map[string]Notification{}, map[string]int64{}
	for _, ev := range events {
		if err := s.outbox(ctx, ev, notes, delivered); err != nil {
			return nil, nil, err
		}
	}
	return notes, delivered, nil
}

// outbox adds an event's notifications and delivery counts to the maps.
func (s *Store) outbox(ctx context.Context, ev string, notes map[string]Notification, delivered map[string]int64) error {
	raw, err := s.rdb.HGetAll(ctx, s.key(ev, "outbox")).Result()
	if err != nil {
		return fmt.Errorf("ledger: outbox of event %q: %w", ev, err)
	}
	for id, b := range raw {
		var n Notification
		if err := json.Unmarshal([]byte(b), &n); err != nil {
			return fmt.Errorf("ledger: outbox %s: %w", id, err)
		}
		notes[id] = n
	}
	counts, err := s.rdb.HGetAll(ctx, s.key(ev, "deliveries")).Result()
	if err != nil {
		return fmt.Errorf("ledger: deliveries of event %q: %w", ev, err)
	}
	for id, c := range counts {
		n, err := strconv.ParseInt(c, 10, 64)
		if err != nil {
			return fmt.Errorf("ledger: deliveries %s: %w", id, err)
		}
		delivered[id] = n
	}
	return nil
}
