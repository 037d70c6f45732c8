package gateway

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultPrefix starts every key of a Simulator whose Config has no Prefix.
const DefaultPrefix = "turnstile:gateway:"

// tagEscaper percent-encodes what would end or split a hash tag, so that
// any order ID can sit inside one.
var tagEscaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")

// maxAmount is the largest amount a call takes: the scripts compare amounts
// as Lua numbers, which are exact integers up to here.
const maxAmount = 1<<53 - 1

// recordFields are the fields of an idempotency key's record, in the order
// the script returns them.
var recordFields = []string{"id", "order", "kind", "amount", "currency", "at"}

// Config configures a Simulator. The zero value is usable: no latency, no
// failures, keys under DefaultPrefix.
type Config struct {
	// Prefix starts every key the Simulator uses, as in
	// "turnstile:gateway:{order-1}:order" (see the package's Keys). It must
	// not contain '{' or '}'. Defaults to DefaultPrefix. Simulators that share a
	// Redis and a Prefix share one ledger.
	Prefix string
	// Latency makes each call sleep a duration drawn uniformly from
	// [0, 2*Latency) before it reaches the ledger. The sleep ends early when
	// ctx does. Zero means no sleep.
	Latency time.Duration
	// FailureRate in [0, 1] is the share of Capture and Refund calls that
	// fail with ErrUnavailable (the read methods never fail on purpose). Half of those fail before doing anything; the other
	// half fail after the movement was recorded, so the client sees an error
	// although the money moved, and a retry with the same key returns the
	// recorded Payment. Zero means no failures.
	FailureRate float64
	// Seed seeds the latency and failure draws, so that a run is
	// reproducible: the n-th call of a Simulator always draws the same. Zero
	// is a seed like any other.
	Seed uint64
}

func (c Config) validate() error {
	switch {
	case strings.ContainsAny(c.Prefix, "{}"):
		return fmt.Errorf("gateway: Prefix %q contains a brace: %w", c.Prefix, ErrInvalid)
	case c.Latency < 0:
		return fmt.Errorf("gateway: Latency %s is negative: %w", c.Latency, ErrInvalid)
	case c.Latency > math.MaxInt64/2:
		return fmt.Errorf("gateway: Latency %s is too long: %w", c.Latency, ErrInvalid)
	case !(c.FailureRate >= 0 && c.FailureRate <= 1): // also refuses NaN
		return fmt.Errorf("gateway: FailureRate %v is outside [0, 1]: %w", c.FailureRate, ErrInvalid)
	}
	return nil
}

// Simulator is a Gateway kept in Redis, so that several worker processes
// share one ledger, which is the ground truth of what money moved. It can
// add latency and outages. It is safe for concurrent use.
type Simulator struct {
	rdb    redis.UniversalClient
	prefix string
	faults *faults
}

var _ Gateway = (*Simulator)(nil)

// NewSimulator returns a Simulator on rdb: a single node, Sentinel or
// Cluster client. It returns an error wrapping ErrInvalid when cfg is
// invalid. It does not contact Redis.
func NewSimulator(rdb redis.UniversalClient, cfg Config) (*Simulator, error) {
	if rdb == nil {
		return nil, fmt.Errorf("gateway: nil Redis client: %w", ErrInvalid)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Simulator{
		rdb:    rdb,
		prefix: cmp.Or(cfg.Prefix, DefaultPrefix),
		faults: newFaults(cfg),
	}, nil
}

// Key layout, after the prefix. An order's keys share the hash tag of its
// escaped ID, so the script that moves its money runs in one Redis Cluster
// slot, and orders spread over the cluster. The parts after the tag
// differ and none is a prefix of another; the keys without a tag start
// with a letter, not a brace: no two keys collide.
func (s *Simulator) orderBase(order string) string {
	return s.prefix + "{" + tagEscaper.Replace(order) + "}:"
}

func (s *Simulator) recordKey(order, key string) string { return s.orderBase(order) + "idem:" + key }
func (s *Simulator) totalsKey(order string) string      { return s.orderBase(order) + "order" }
func (s *Simulator) idsKey(order string) string         { return s.orderBase(order) + "payments" }
func (s *Simulator) keysKey(order string) string        { return s.orderBase(order) + "keys" }
func (s *Simulator) boundKey(key string) string         { return s.prefix + "bound:" + key }
func (s *Simulator) ordersKey() string                  { return s.prefix + "orders" }

// Capture takes amount in currency for orderID, once per key; see Gateway.
// It returns an error wrapping ErrCurrency when the order's earlier captures
// used another currency.
func (s *Simulator) Capture(ctx context.Context, key, orderID string, amount int64, currency string) (Payment, error) {
	return s.move(ctx, KindCapture, key, orderID, amount, currency)
}

// Refund gives back amount of orderID's captures, once per key; see
// Gateway. It returns an error wrapping ErrExceedsCaptured when amount is
// more than the order's captures minus its refunds, and ErrCurrency when the
// captures used another currency.
func (s *Simulator) Refund(ctx context.Context, key, orderID string, amount int64, currency string) (Payment, error) {
	return s.move(ctx, KindRefund, key, orderID, amount, currency)
}

func (s *Simulator) move(ctx context.Context, kind Kind, key, orderID string, amount int64, currency string) (Payment, error) {
	if err := validate(key, orderID, amount, currency); err != nil {
		return Payment{}, fmt.Errorf("gateway: %s: %w", kind, err)
	}
	if ctx.Err() != nil {
		return Payment{}, fmt.Errorf("gateway: %s %q: %w", kind, key, context.Cause(ctx))
	}
	fault, delay := s.faults.draw()
	if err := sleep(ctx, delay); err != nil {
		return Payment{}, fmt.Errorf("gateway: %s %q: %w", kind, key, err)
	}
	if fault == faultBefore {
		return Payment{}, fmt.Errorf("gateway: %s %q: request lost: %w", kind, key, ErrUnavailable)
	}
	res, err := s.claim(ctx, key, orderID)
	if err == nil && res == nil {
		amt := strconv.FormatInt(amount, 10)
		keys := []string{s.recordKey(orderID, key), s.totalsKey(orderID), s.idsKey(orderID), s.keysKey(orderID)}
		res, err = moveScript.Run(ctx, s.rdb, keys, newPaymentID(), orderID, string(kind), amt, currency, key).StringSlice()
	}
	if err != nil {
		return Payment{}, fmt.Errorf("gateway: %s %q: %w", kind, key, err)
	}
	if fault == faultAfter {
		// Whatever the script said, recorded or refused, the client never
		// hears it.
		return Payment{}, fmt.Errorf("gateway: %s %q: response lost: %w", kind, key, ErrUnavailable)
	}
	if len(res) == 0 {
		return Payment{}, fmt.Errorf("gateway: %s %q: empty reply", kind, key)
	}
	switch status, f := res[0], res[1:]; {
	case (status == "recorded" || status == "replayed") && len(f) == len(recordFields):
		return parsePayment(key, f)
	case status == "reused" && len(f) == 4 && f[1] == "":
		return Payment{}, fmt.Errorf("gateway: %s %q: key first sent for order %q: %w", kind, key, f[0], ErrKeyReused)
	case status == "reused" && len(f) == 4:
		return Payment{}, fmt.Errorf("gateway: %s %q: key first used for %s of %s %s on order %q: %w",
			kind, key, f[1], f[2], f[3], f[0], ErrKeyReused)
	case status == "currency" && len(f) == 1:
		return Payment{}, fmt.Errorf("gateway: %s %q: order %q was captured in %s, not %s: %w",
			kind, key, orderID, f[0], currency, ErrCurrency)
	case status == "exceeds" && len(f) == 1:
		return Payment{}, fmt.Errorf("gateway: %s %q: %d %s on order %q with %s refundable: %w",
			kind, key, amount, currency, orderID, f[0], ErrExceedsCaptured)
	}
	return Payment{}, fmt.Errorf("gateway: %s %q: unexpected reply %q", kind, key, res)
}

// claim binds an idempotency key to orderID, once and for good, and adds
// orderID to the orders asked about. It returns nil when the key is
// orderID's, and otherwise the script's "reused" reply naming the order the
// key is bound to and, if that order's call moved money, its parameters.
//
// The binding is what keeps a key to one order now that each order's
// records live in its own slot, where the script cannot see another
// order's: it is written before the script, outside it, and never undone,
// since undoing it could race a call of the same order that moves money.
// So a key first sent for an order stays that order's even when that call
// moved nothing; within the order it stays free, as the script decides.
func (s *Simulator) claim(ctx context.Context, key, orderID string) ([]string, error) {
	pipe := s.rdb.Pipeline()
	bound := pipe.SetNX(ctx, s.boundKey(key), orderID, 0)
	pipe.SAdd(ctx, s.ordersKey(), orderID)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	if bound.Val() {
		return nil, nil
	}
	first, err := s.rdb.Get(ctx, s.boundKey(key)).Result()
	if err != nil {
		return nil, err
	}
	if first == orderID {
		return nil, nil
	}
	rec, err := s.rdb.HMGet(ctx, s.recordKey(first, key), "kind", "amount", "currency").Result()
	if err != nil {
		return nil, err
	}
	reply := []string{"reused", first}
	for _, v := range rec {
		str, _ := v.(string) // nil: that call moved nothing
		reply = append(reply, str)
	}
	return reply, nil
}

// Ledger returns the sums of orderID's captures and refunds; both are zero
// for an order without payments. It returns an error wrapping ErrInvalid
// for an empty orderID.
func (s *Simulator) Ledger(ctx context.Context, orderID string) (captured, refunded int64, err error) {
	if orderID == "" {
		return 0, 0, fmt.Errorf("gateway: ledger: empty order ID: %w", ErrInvalid)
	}
	vals, err := s.rdb.HMGet(ctx, s.totalsKey(orderID), "captured", "refunded").Result()
	if err != nil {
		return 0, 0, fmt.Errorf("gateway: ledger of order %q: %w", orderID, err)
	}
	sums := make([]int64, 2)
	for i, v := range vals {
		if v == nil {
			continue
		}
		str, ok := v.(string)
		if !ok {
			return 0, 0, fmt.Errorf("gateway: ledger of order %q: unexpected %T", orderID, v)
		}
		if sums[i], err = strconv.ParseInt(str, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("gateway: ledger of order %q: %w", orderID, err)
		}
	}
	return sums[0], sums[1], nil
}

// Payments returns orderID's payments in the order the gateway recorded
// them; none for an order without payments. It returns an error wrapping
// ErrInvalid for an empty orderID.
func (s *Simulator) Payments(ctx context.Context, orderID string) ([]Payment, error) {
	if orderID == "" {
		return nil, fmt.Errorf("gateway: payments: empty order ID: %w", ErrInvalid)
	}
	pipe := s.rdb.Pipeline()
	idsCmd := pipe.LRange(ctx, s.idsKey(orderID), 0, -1)
	keysCmd := pipe.HGetAll(ctx, s.keysKey(orderID))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("gateway: payments of order %q: %w", orderID, err)
	}
	ids, keyOf := idsCmd.Val(), keysCmd.Val()
	if len(ids) == 0 {
		return nil, nil
	}
	// Records never change once written, so reading them in a second round
	// trip cannot see a payment half-recorded.
	pipe = s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		key, ok := keyOf[id]
		if !ok {
			return nil, fmt.Errorf("gateway: payments of order %q: payment %s has no idempotency key", orderID, id)
		}
		cmds[i] = pipe.HMGet(ctx, s.recordKey(orderID, key), recordFields...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("gateway: payments of order %q: %w", orderID, err)
	}
	payments := make([]Payment, len(ids))
	for i, cmd := range cmds {
		f := make([]string, len(recordFields))
		for j, v := range cmd.Val() {
			str, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("gateway: payments of order %q: payment %s: record lacks %s", orderID, ids[i], recordFields[j])
			}
			f[j] = str
		}
		p, err := parsePayment(keyOf[ids[i]], f)
		if err != nil {
			return nil, err
		}
		payments[i] = p
	}
	return payments, nil
}

// Orders returns every order ID with at least one payment, sorted.
//
// The set of orders asked about is written before a call's script and
// outside it (the script stays in the order's slot), so it can name an
// order whose calls all moved nothing; Orders keeps those with a payment
// recorded, and never misses one, whatever crashed between the two.
func (s *Simulator) Orders(ctx context.Context) ([]string, error) {
	asked, err := s.rdb.SMembers(ctx, s.ordersKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("gateway: orders: %w", err)
	}
	pipe := s.rdb.Pipeline()
	paid := make([]*redis.IntCmd, len(asked))
	for i, o := range asked {
		paid[i] = pipe.Exists(ctx, s.totalsKey(o))
	}
	if len(asked) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("gateway: orders: %w", err)
		}
	}
	var orders []string
	for i, o := range asked {
		if paid[i].Val() > 0 {
			orders = append(orders, o)
		}
	}
	slices.Sort(orders)
	return orders, nil
}

// validate checks a call's arguments before any I/O.
func validate(key, orderID string, amount int64, currency string) error {
	switch {
	case key == "":
		return fmt.Errorf("empty idempotency key: %w", ErrInvalid)
	case orderID == "":
		return fmt.Errorf("empty order ID: %w", ErrInvalid)
	case amount <= 0:
		return fmt.Errorf("amount %d is not positive: %w", amount, ErrInvalid)
	case amount > maxAmount:
		return fmt.Errorf("amount %d is above 2^53-1: %w", amount, ErrInvalid)
	case !isCurrency(currency):
		return fmt.Errorf("currency %q is not three upper-case letters: %w", currency, ErrInvalid)
	}
	return nil
}

func isCurrency(c string) bool {
	if len(c) != 3 {
		return false
	}
	for i := range len(c) {
		if c[i] < 'A' || c[i] > 'Z' {
			return false
		}
	}
	return true
}

// newPaymentID returns "pay_" and 16 random hex digits.
func newPaymentID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails: crypto/rand crashes the program instead
	return "pay_" + hex.EncodeToString(b[:])
}

// parsePayment builds a Payment from the recordFields of key's record.
func parsePayment(key string, f []string) (Payment, error) {
	amount, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		return Payment{}, fmt.Errorf("gateway: payment %s: amount: %w", f[0], err)
	}
	at, err := strconv.ParseInt(f[5], 10, 64)
	if err != nil {
		return Payment{}, fmt.Errorf("gateway: payment %s: time: %w", f[0], err)
	}
	kind := Kind(f[2])
	if kind != KindCapture && kind != KindRefund {
		return Payment{}, fmt.Errorf("gateway: payment %s: unknown kind %q", f[0], f[2])
	}
	return Payment{
		ID:       f[0],
		Key:      key,
		OrderID:  f[1],
		Kind:     kind,
		Amount:   amount,
		Currency: f[4],
		At:       time.UnixMicro(at).UTC(),
	}, nil
}
