package keyslot_test

import (
	"testing"

	"github.com/turnstilehq/turnstile/internal/keyslot"
)

// The expected slots are Redis's own answers to CLUSTER KEYSLOT, and the
// CRC16 check value is the one the Redis Cluster specification gives.
func TestOf(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]int{
		"123456789":            0x31C3 % keyslot.Slots, // CRC16/XMODEM check value 0x31C3
		"foo":                  12182,
		"{user1000}.following": 3443,
		"{user1000}.followers": 3443,
		"user1000":             3443,
		"foo{}{bar}":           8363, // empty first tag: the whole key is hashed
		"foo{{bar}}zap":        4015, // the tag is "{bar"
		"foo{bar}{zap}":        5061, // only the first tag counts: "bar"
		"bar":                  5061,
	} {
		if got := keyslot.Of(key); got != want {
			t.Errorf("Of(%q) = %d, want %d", key, got, want)
		}
	}
}
