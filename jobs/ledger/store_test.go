package ledger_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/turnstilehq/turnstile/internal/keyslot"
	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var backends = []struct {
	name   string
	client func(t *testing.T) redis.UniversalClient
}{
	{"Miniredis", miniClient},
	{"Redis", serverClient},
}

// The clients check that each script call's keys share one Cluster slot.

func miniClient(t *testing.T) redis.UniversalClient {
	t.Helper()
	_, c := redistest.MiniClient(t)
	redistest.CheckSlots(t, c)
	return c
}

func serverClient(t *testing.T) redis.UniversalClient {
	t.Helper()
	c := redistest.Server(t).Client(t)
	redistest.CheckSlots(t, c)
	return c
}

func newOrder(id string) *ledger.Order {
	return &ledger.Order{
		ID: id, Items: []ledger.Item{{TicketType: "gold", Quantity: 2}},
		Amount: 5000, Currency: "EUR", State: ledger.StateReserved, Created: time.Now().UTC(),
	}
}

func TestStore(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			testStore(t, be.client)
		})
	}
}

func testStore(t *testing.T, client func(t *testing.T) redis.UniversalClient) {
	t.Helper()
	t.Run("NumbersAreSequentialAndUnique", func(t *testing.T) {
		t.Parallel()
		s := ledger.New(client(t), "")
		const n = 50
		numbers := make(chan string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				o := newOrder(fmt.Sprintf("o-%d", i))
				if err := s.Commit(t.Context(), nil, ledger.Change{Order: o}); err != nil {
					t.Error(err)
				}
				numbers <- o.Number
			})
		}
		wg.Wait()
		close(numbers)
		seen := map[string]bool{}
		for num := range numbers {
			require.Regexp(t, `^TS-\d{6}$`, num)
			require.False(t, seen[num], "number %s given twice", num)
			seen[num] = true
		}
		require.Len(t, seen, n)
		require.True(t, seen["TS-000001"] && seen[fmt.Sprintf("TS-%06d", n)], "numbers run 1..n")
		o, err := s.Order(t.Context(), "o-7")
		require.NoError(t, err)
		require.NotEmpty(t, o.Number, "the stored order carries its number")
	})

	t.Run("StaleFenceWritesNothing", func(t *testing.T) {
		t.Parallel()
		s := ledger.New(client(t), "")
		ctx := t.Context()
		require.NoError(t, s.AddTicketType(ctx, ledger.TicketType{ID: "gold", Capacity: 10}))
		o := newOrder("o-1")
		require.NoError(t, s.Commit(ctx, []ledger.Fence{{Resource: "order:o-1", Token: 5}, {Resource: "ticket_type:gold:inventory", Token: 9}},
			ledger.Change{Order: o, Available: map[string]int64{"gold": 8}}))

		late := *o
		late.State = ledger.StateRevoked
		err := s.Commit(ctx, []ledger.Fence{{Resource: "order:o-1", Token: 4}},
			ledger.Change{
				Order: &late, Available: map[string]int64{"gold": 10},
				Outbox: []ledger.Notification{{ID: "o-1:revoked", OrderID: "o-1", Kind: "revoked"}},
			})
		require.ErrorIs(t, err, ledger.ErrStaleFence)
		require.Contains(t, err.Error(), "order:o-1")
		got, err := s.Order(ctx, "o-1")
		require.NoError(t, err)
		require.Equal(t, ledger.StateReserved, got.State, "a stale write changed the order")
		_, avail, err := s.TicketType(ctx, "gold")
		require.NoError(t, err)
		require.Equal(t, int64(8), avail, "a stale write changed the inventory")
		notes, _, err := s.Outbox(ctx)
		require.NoError(t, err)
		require.Empty(t, notes, "a stale write recorded a notification")

		// The same holder writes again; a newer one takes over.
		require.NoError(t, s.Commit(ctx, []ledger.Fence{{Resource: "order:o-1", Token: 5}}, ledger.Change{Order: got}))
		require.NoError(t, s.Commit(ctx, []ledger.Fence{{Resource: "order:o-1", Token: 6}}, ledger.Change{Order: got}))
		require.ErrorIs(t, s.Commit(ctx, []ledger.Fence{{Resource: "order:o-1", Token: 5}}, ledger.Change{Order: got}), ledger.ErrStaleFence)
	})

	t.Run("FencedReadRefusesOlderHolders", func(t *testing.T) {
		t.Parallel()
		s := ledger.New(client(t), "")
		ctx := t.Context()
		require.NoError(t, s.AddTicketType(ctx, ledger.TicketType{ID: "gold", Capacity: 10}))
		inv := func(token int64) ledger.Fence {
			return ledger.Fence{Resource: "ticket_type:gold:inventory", Token: token}
		}
		ord := func(token int64) ledger.Fence { return ledger.Fence{Resource: "order:o-1", Token: token} }

		// Holder 10 reads, then holder 11 reads: 10's commit, computed
		// from a count 11 has seen too, must not land.
		_, n, err := s.TicketType(ctx, "gold", inv(10))
		require.NoError(t, err)
		require.Equal(t, int64(10), n)
		_, n, err = s.TicketType(ctx, "gold", inv(11))
		require.NoError(t, err)
		require.Equal(t, int64(10), n)
		err = s.Commit(ctx, []ledger.Fence{inv(10)}, ledger.Change{Available: map[string]int64{"gold": 8}})
		require.ErrorIs(t, err, ledger.ErrStaleFence, "a commit older than a read must be refused")
		require.Contains(t, err.Error(), "ticket_type:gold:inventory")
		_, _, err = s.TicketType(ctx, "gold", inv(10))
		require.ErrorIs(t, err, ledger.ErrStaleFence, "a read older than a read must be refused")
		require.NoError(t, s.Commit(ctx, []ledger.Fence{inv(11)}, ledger.Change{Available: map[string]int64{"gold": 7}}))
		_, n, err = s.TicketType(ctx, "gold", inv(11))
		require.NoError(t, err, "the holder reads its own write")
		require.Equal(t, int64(7), n)

		// Orders: the same, and a refused read records none of its fences.
		require.NoError(t, s.Commit(ctx, []ledger.Fence{ord(3)}, ledger.Change{Order: newOrder("o-1")}))
		_, err = s.Order(ctx, "o-1", ord(5), inv(9))
		require.ErrorIs(t, err, ledger.ErrStaleFence)
		require.Contains(t, err.Error(), "ticket_type:gold:inventory")
		o, err := s.Order(ctx, "o-1", ord(4))
		require.NoError(t, err, "the refused read must not have recorded order fence 5")
		require.Equal(t, ledger.StateReserved, o.State)
		_, err = s.Order(ctx, "o-1", ord(3))
		require.ErrorIs(t, err, ledger.ErrStaleFence)
		_, err = s.Order(ctx, "nope", ledger.Fence{Resource: "order:nope", Token: 1})
		require.ErrorIs(t, err, ledger.ErrNotFound)
		_, _, err = s.TicketType(ctx, "nope", ledger.Fence{Resource: "ticket_type:nope:inventory", Token: 1})
		require.ErrorIs(t, err, ledger.ErrNotFound)
	})

	t.Run("AChangeToWhatWasReadIsRefused", func(t *testing.T) {
		// Redis that loses acknowledged writes (a crash under appendfsync
		// everysec, a failover, a restart without persistence) can take
		// back what a holder read while its fences still pass: the
		// holder's read was lost with them. Its commit, computed from a
		// state that no longer stands, must not land.
		t.Parallel()
		rdb := client(t)
		s := ledger.New(rdb, "")
		ctx := t.Context()
		require.NoError(t, s.AddTicketType(ctx, ledger.TicketType{ID: "gold", Capacity: 10}))
		ord := ledger.Fence{Resource: "order:o-1", Token: 7}
		inv := ledger.Fence{Resource: "ticket_type:gold:inventory", Token: 7}
		require.NoError(t, s.Commit(ctx, []ledger.Fence{ord, inv}, ledger.Change{Order: newOrder("o-1"), Available: map[string]int64{"gold": 8}}))
		before, err := rdb.Get(ctx, "turnstile:ledger:{ledger}:order:o-1").Result()
		require.NoError(t, err)

		o, err := s.Order(ctx, "o-1", ord)
		require.NoError(t, err)
		_, n, err := s.TicketType(ctx, "gold", inv)
		require.NoError(t, err)
		// Writes lost: the order as it was before the last commit, two
		// tickets more available.
		o2 := *o
		o2.State = ledger.StatePaid
		b, err := json.Marshal(&o2)
		require.NoError(t, err)
		require.NoError(t, rdb.Set(ctx, "turnstile:ledger:{ledger}:order:o-1", b, 0).Err())
		o.State = ledger.StateRevoked
		err = s.Commit(ctx, []ledger.Fence{ord, inv}, ledger.Change{Order: o, Available: map[string]int64{"gold": n + 2}, AvailableWas: map[string]int64{"gold": n}})
		require.ErrorIs(t, err, ledger.ErrChanged, "an order changed since it was read")
		require.Contains(t, err.Error(), "order o-1")
		require.NoError(t, rdb.Set(ctx, "turnstile:ledger:{ledger}:order:o-1", before, 0).Err())
		require.NoError(t, rdb.HSet(ctx, "turnstile:ledger:{ledger}:tt:gold", "available", n+2).Err())
		err = s.Commit(ctx, []ledger.Fence{ord, inv}, ledger.Change{Order: o, Available: map[string]int64{"gold": n + 2}, AvailableWas: map[string]int64{"gold": n}})
		require.ErrorIs(t, err, ledger.ErrChanged, "a count changed since it was read")
		require.Contains(t, err.Error(), "ticket type gold")
		got, err := s.Order(ctx, "o-1")
		require.NoError(t, err)
		require.Equal(t, ledger.StateReserved, got.State, "a refused commit wrote the order")

		// Gone altogether (a restart without persistence): refused too.
		require.NoError(t, rdb.Del(ctx, "turnstile:ledger:{ledger}:order:o-1").Err())
		err = s.Commit(ctx, []ledger.Fence{ord}, ledger.Change{Order: o})
		require.ErrorIs(t, err, ledger.ErrChanged, "an order gone since it was read")
		require.NoError(t, rdb.Set(ctx, "turnstile:ledger:{ledger}:order:o-1", before, 0).Err())

		// As read: the commit lands.
		require.NoError(t, s.Commit(ctx, []ledger.Fence{ord, inv}, ledger.Change{Order: o, Available: map[string]int64{"gold": n + 4}, AvailableWas: map[string]int64{"gold": n + 2}}))
		got, err = s.Order(ctx, "o-1")
		require.NoError(t, err)
		require.Equal(t, ledger.StateRevoked, got.State)
	})

	t.Run("NotificationsAreSentOnce", func(t *testing.T) {
		t.Parallel()
		s := ledger.New(client(t), "")
		ctx := t.Context()
		note := ledger.Notification{ID: "o-2:confirmed", OrderID: "o-2", Kind: "confirmed"}
		o := newOrder("o-2")
		require.NoError(t, s.Commit(ctx, nil, ledger.Change{Order: o, Outbox: []ledger.Notification{note}}))
		require.NoError(t, s.Commit(ctx, nil, ledger.Change{Order: o, Outbox: []ledger.Notification{note}}), "a retried job records it again")
		var wg sync.WaitGroup
		sent := make(chan int, 8)
		for range 8 {
			wg.Go(func() {
				n, err := s.Deliver(ctx, "o-2")
				if err != nil {
					t.Error(err)
				}
				sent <- n
			})
		}
		wg.Wait()
		close(sent)
		total := 0
		for n := range sent {
			total += n
		}
		require.Equal(t, 1, total)
		notes, delivered, err := s.Outbox(ctx)
		require.NoError(t, err)
		require.Len(t, notes, 1)
		require.Equal(t, int64(1), delivered[note.ID])
	})

	t.Run("ReadsOfMissingThings", func(t *testing.T) {
		t.Parallel()
		s := ledger.New(client(t), "")
		_, err := s.Order(t.Context(), "nope")
		require.ErrorIs(t, err, ledger.ErrNotFound)
		_, _, err = s.TicketType(t.Context(), "nope")
		require.ErrorIs(t, err, ledger.ErrNotFound)
	})
}

func TestStore_Events(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			testEvents(t, be.client)
		})
	}
}

// eventShop is a Store with one ticket type in the default event and one
// in each of two events whose keys hash to different Cluster slots.
func eventShop(t *testing.T, rdb redis.UniversalClient) *ledger.Store {
	t.Helper()
	require.NotEqual(t, keyslot.Of("{ledger:rock}"), keyslot.Of("{ledger:jazz}"), "pick events that spread")
	s := ledger.New(rdb, "")
	for _, tt := range []ledger.TicketType{
		{ID: "gold", Capacity: 10, Price: 2500, Currency: "EUR"},
		{ID: "pit", Event: "rock", Capacity: 10, Price: 4000, Currency: "EUR"},
		{ID: "lounge", Event: "jazz", Capacity: 10, Price: 3000, Currency: "EUR"},
	} {
		require.NoError(t, s.AddTicketType(t.Context(), tt))
	}
	return s
}

func eventOrder(id, event, ticketType string) *ledger.Order {
	o := newOrder(id)
	o.Event, o.Items = event, []ledger.Item{{TicketType: ticketType, Quantity: 2}}
	return o
}

func testEvents(t *testing.T, client func(t *testing.T) redis.UniversalClient) {
	t.Helper()
	t.Run("AnEventsKeysShareASlotAndEventsSpread", func(t *testing.T) {
		t.Parallel()
		rdb := client(t)
		s := eventShop(t, rdb)
		ctx := t.Context()
		fence := func(r string) []ledger.Fence { return []ledger.Fence{{Resource: r, Token: 1}} }
		orders := []*ledger.Order{eventOrder("o-r", "rock", "pit"), eventOrder("o-j", "jazz", "lounge"), newOrder("o-d")}
		for _, o := range orders {
			tt := o.Items[0].TicketType
			_, n, err := s.TicketType(ctx, tt, fence("ticket_type:"+tt+":inventory")...)
			require.NoError(t, err)
			require.NoError(t, s.Commit(ctx, append(fence("order:"+o.ID), fence("ticket_type:"+tt+":inventory")...), ledger.Change{
				Order: o, Available: map[string]int64{tt: n - 2},
				Outbox: []ledger.Notification{{ID: o.ID + ":reserved", OrderID: o.ID, Kind: "reserved"}},
			}))
			_, err = s.Deliver(ctx, o.ID)
			require.NoError(t, err)
		}
		// One notification left pending, so that its order's pending set
		// and its event's undelivered index are among the keys below.
		require.NoError(t, s.Commit(ctx, nil, ledger.Change{
			Order: orders[0], Outbox: []ledger.Notification{{ID: "o-r:confirmed", OrderID: "o-r", Kind: "confirmed"}},
		}))
		// Every key of an event, and its orders', is in the event's slot.
		keys, err := rdb.Keys(ctx, ledger.DefaultPrefix+"*").Result()
		require.NoError(t, err)
		require.Contains(t, keys, ledger.DefaultPrefix+"{ledger:rock}:undelivered")
		require.Contains(t, keys, ledger.DefaultPrefix+"{ledger:rock}:pending:o-r")
		_, err = s.Deliver(ctx, "o-r")
		require.NoError(t, err)
		slots := map[string]map[int]bool{}
		for _, k := range keys {
			for _, tag := range []string{"{ledger:rock}", "{ledger:jazz}", "{ledger}"} {
				if strings.Contains(k, tag) {
					if slots[tag] == nil {
						slots[tag] = map[int]bool{}
					}
					slots[tag][keyslot.Of(k)] = true
				}
			}
		}
		for tag, in := range slots {
			require.Len(t, in, 1, "the keys of %s span slots", tag)
		}
		orderSlot := func(id string) int {
			t.Helper()
			var slot []int
			for _, k := range keys {
				if strings.HasSuffix(k, ":order:"+id) && !strings.Contains(k, ":fence:") {
					slot = append(slot, keyslot.Of(k))
				}
			}
			require.Len(t, slot, 1, "order %s's key", id)
			return slot[0]
		}
		require.NotEqual(t, orderSlot("o-r"), orderSlot("o-j"), "two events' orders share a slot")
		require.Equal(t, keyslot.Of("{ledger:rock}"), orderSlot("o-r"))

		// Numbers are per event and unique across them.
		numbers := map[string]string{}
		for _, id := range []string{"o-r", "o-j", "o-d"} {
			o, err := s.Order(ctx, id)
			require.NoError(t, err)
			numbers[id] = o.Number
		}
		require.Equal(t, map[string]string{"o-r": "TS-rock-000001", "o-j": "TS-jazz-000001", "o-d": "TS-000001"}, numbers)

		// The listings span every event.
		ids, err := s.Orders(ctx)
		require.NoError(t, err)
		require.Equal(t, []string{"o-d", "o-j", "o-r"}, ids)
		types, err := s.TicketTypes(ctx)
		require.NoError(t, err)
		require.Equal(t, []string{"gold", "lounge", "pit"}, types)
		notes, delivered, err := s.Outbox(ctx)
		require.NoError(t, err)
		require.Len(t, notes, 4)
		for id := range notes {
			require.Equal(t, int64(1), delivered[id], id)
		}
	})

	t.Run("AChangeSpanningEventsWritesNothing", func(t *testing.T) {
		t.Parallel()
		s := eventShop(t, client(t))
		ctx := t.Context()
		err := s.Commit(ctx, nil, ledger.Change{Order: eventOrder("o-1", "rock", "pit"), Available: map[string]int64{"pit": 8, "lounge": 8}})
		require.ErrorIs(t, err, ledger.ErrOtherEvent)
		require.ErrorContains(t, err, "lounge")
		err = s.Commit(ctx, nil, ledger.Change{Available: map[string]int64{"gold": 8, "pit": 8}})
		require.ErrorIs(t, err, ledger.ErrOtherEvent)
		for _, tt := range []string{"gold", "pit", "lounge"} {
			_, n, err := s.TicketType(ctx, tt)
			require.NoError(t, err)
			require.Equal(t, int64(10), n, "%s changed", tt)
		}
		_, err = s.Order(ctx, "o-1")
		require.ErrorIs(t, err, ledger.ErrNotFound)
		require.Error(t, s.AddTicketType(ctx, ledger.TicketType{ID: "x", Event: "a{b}", Capacity: 1}), "a brace in an event")
	})

	t.Run("AnOrderIsFoundByItsIDAlone", func(t *testing.T) {
		t.Parallel()
		rdb := client(t)
		s := eventShop(t, rdb)
		ctx := t.Context()
		require.NoError(t, s.Commit(ctx, nil, ledger.Change{
			Order:  eventOrder("o-1", "rock", "pit"),
			Outbox: []ledger.Notification{{ID: "o-1:reserved", OrderID: "o-1", Kind: "reserved"}},
		}))
		event, err := rdb.Get(ctx, ledger.DefaultPrefix+"event-of:{o-1}").Result()
		require.NoError(t, err)
		require.Equal(t, "rock", event, "the index")

		// Another process: nothing cached.
		other := ledger.New(rdb, "")
		o, err := other.Order(ctx, "o-1", ledger.Fence{Resource: "order:o-1", Token: 3})
		require.NoError(t, err)
		require.Equal(t, "TS-rock-000001", o.Number)
		require.Equal(t, "rock", o.Event)
		_, err = s.Order(ctx, "o-1", ledger.Fence{Resource: "order:o-1", Token: 2})
		require.ErrorIs(t, err, ledger.ErrStaleFence, "the other process's fenced read reached the order's event")
		n, err := other.Deliver(ctx, "o-1")
		require.NoError(t, err)
		require.Equal(t, 1, n)

		// An order ID is the shop's, not the event's.
		err = other.Commit(ctx, nil, ledger.Change{Order: eventOrder("o-1", "jazz", "lounge")})
		require.ErrorIs(t, err, ledger.ErrOtherEvent)
		ids, err := s.Orders(ctx)
		require.NoError(t, err)
		require.Equal(t, []string{"o-1"}, ids)
		_, err = other.Order(ctx, "o-nope")
		require.ErrorIs(t, err, ledger.ErrNotFound)
	})
}
