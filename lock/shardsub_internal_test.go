package lock

import (
	"testing"

	"github.com/turnstilehq/turnstile/internal/keyslot"
)

// Every slot's channel lives in that slot, or a release script's SPUBLISH
// to it would be refused (a script may publish only within its keys' slot)
// and its waiters would learn of their grants only by polling.
func TestShardSubs_ChannelOfEverySlotIsInThatSlot(t *testing.T) {
	s := newShardSubs(nil, DefaultPrefix+"waiters:X", nil, nil)
	longest := 0
	for slot := range keyslot.Slots {
		ch := s.channel(slot)
		if got := keyslot.Of(ch); got != slot {
			t.Fatalf("channel %q for slot %d is in slot %d", ch, slot, got)
		}
		got, ok := s.slotOf(ch)
		if !ok || got != slot {
			t.Fatalf("slotOf(%q) = %d, %v; want %d", ch, got, ok, slot)
		}
		longest = max(longest, len(slotTags()[slot]))
	}
	// Short tags keep every queue entry and grant short.
	if longest > 4 {
		t.Fatalf("longest tag has %d characters", longest)
	}
	if _, ok := s.slotOf("another:channel{1}"); ok {
		t.Fatal("slotOf claims another Locker's channel")
	}
}
