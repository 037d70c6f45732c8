package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Where the keys live. Every key of one event shares the hash tag
// {ledger:<event>} ({ledger} for the default event, the one the ledger
// had before it knew events, so its keys kept their names): one commit
// touches one order, the inventories of its ticket types and the fences
// of their locks, and an order's items are all of one event, so whatever
// one script touches is in one Redis Cluster slot, while different events
// spread over the slots. What is looked up by an ID alone lives outside
// the events' slots:
//
//	<prefix>{ledger-events}:types  hash: ticket type -> its event
//	<prefix>event-of:{<order>}     string: an order's event, written once
//
// Both never change once written, so a Store caches what it read of them.

// tagEscaper percent-encodes what would end or split a hash tag, so that
// any order ID can sit inside one. Events need none: CheckEvent keeps
// braces out of them.
var tagEscaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")

// eventTag is the hash tag of an event's keys.
func eventTag(event string) string {
	if event == "" {
		return "{ledger}"
	}
	return "{ledger:" + event + "}"
}

// key is the key of parts in event's slot.
func (s *Store) key(event string, parts ...string) string {
	return s.prefix + eventTag(event) + ":" + strings.Join(parts, ":")
}

func (s *Store) typesKey() string { return s.prefix + "{ledger-events}:types" }

func (s *Store) eventOfKey(orderID string) string {
	return s.prefix + "event-of:{" + tagEscaper.Replace(orderID) + "}"
}

// typeEvent returns the event of a ticket type: the default event for one
// the directory does not name (unknown, or added before events existed).
func (s *Store) typeEvent(ctx context.Context, id string) (string, error) {
	if e, ok := s.typeEvents.get(id); ok {
		return e, nil
	}
	e, err := s.rdb.HGet(ctx, s.typesKey(), id).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil // not cached: the type may be added later
	}
	if err != nil {
		return "", fmt.Errorf("ledger: event of ticket type %s: %w", id, err)
	}
	s.typeEvents.put(id, e)
	return e, nil
}

// orderEvent returns the event of an order: the default event for one
// without an index entry (unknown, or committed before events existed).
func (s *Store) orderEvent(ctx context.Context, id string) (string, error) {
	if e, ok := s.orderEvents.get(id); ok {
		return e, nil
	}
	e, err := s.rdb.Get(ctx, s.eventOfKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil // not cached: the order may be reserved later
	}
	if err != nil {
		return "", fmt.Errorf("ledger: event of order %s: %w", id, err)
	}
	s.orderEvents.put(id, e)
	return e, nil
}

// indexOrder records a new order's event, once: an order ID already taken
// in another event is refused, since jobs name orders by ID alone.
func (s *Store) indexOrder(ctx context.Context, o *Order) error {
	if e, ok := s.orderEvents.get(o.ID); ok && e == o.Event {
		return nil
	}
	key := s.eventOfKey(o.ID)
	set, err := s.rdb.SetNX(ctx, key, o.Event, 0).Result()
	if err != nil {
		return fmt.Errorf("ledger: commit: index order %s: %w", o.ID, err)
	}
	if !set {
		e, err := s.rdb.Get(ctx, key).Result()
		if err != nil {
			return fmt.Errorf("ledger: commit: index order %s: %w", o.ID, err)
		}
		if e != o.Event {
			return fmt.Errorf("ledger: commit: order %s of event %q: the ID is taken in event %q: %w", o.ID, o.Event, e, ErrOtherEvent)
		}
	}
	s.orderEvents.put(o.ID, o.Event)
	return nil
}

// changeEvent returns the one event a change touches: its order's, and
// that of every ticket type whose count it sets.
func (s *Store) changeEvent(ctx context.Context, ch Change) (string, error) {
	event, known := "", false
	if ch.Order != nil {
		event, known = ch.Order.Event, true
	}
	for _, tt := range slices.Sorted(mapsKeys(ch.Available)) {
		e, err := s.typeEvent(ctx, tt)
		if err != nil {
			return "", err
		}
		if !known {
			event, known = e, true
		} else if e != event {
			return "", fmt.Errorf("ledger: commit: ticket type %s is of event %q, the change's is %q: %w", tt, e, event, ErrOtherEvent)
		}
	}
	return event, nil
}

// events returns every event with a ticket type, and the default event.
func (s *Store) events(ctx context.Context) ([]string, error) {
	vals, err := s.rdb.HVals(ctx, s.typesKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: events: %w", err)
	}
	events := append(vals, "")
	slices.Sort(events)
	return slices.Compact(events), nil
}

// eventCache keeps up to about 2*max immutable ID -> event entries: when
// the current generation is full it becomes the old one, and the old one
// is dropped, so recently used entries survive, as in an LRU, at the cost
// of a map swap instead of a list.
type eventCache struct {
	max int

	mu       sync.Mutex
	cur, old map[string]string
}

func newEventCache(maxEntries int) *eventCache {
	return &eventCache{max: maxEntries, cur: map[string]string{}}
}

func (c *eventCache) get(id string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.cur[id]; ok {
		return e, true
	}
	e, ok := c.old[id]
	if ok {
		c.putLocked(id, e)
	}
	return e, ok
}

func (c *eventCache) put(id, event string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(id, event)
}

func (c *eventCache) putLocked(id, event string) {
	if len(c.cur) >= c.max {
		c.old, c.cur = c.cur, make(map[string]string, c.max)
	}
	c.cur[id] = event
}
