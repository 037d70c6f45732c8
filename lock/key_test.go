package lock_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/lock"
)

type stringer string

func (s stringer) String() string { return string(s) }

func TestKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		parts      []any
		want, kind string
	}{
		{[]any{"order", 42}, "order:42", "order"},
		{[]any{"ticket_type", int64(7), "inventory"}, "ticket_type:7:inventory", "ticket_type"},
		{[]any{"order", "42"}, "order:42", "order"},
		{[]any{"a:b"}, "a%3Ab", "a%3Ab"},
		{[]any{"a", "b"}, "a:b", "a"},
		{[]any{"x", "{tag}", "100%"}, "x:%7Btag%7D:100%25", "x"},
		{[]any{"u", uint8(255), stringer("id-1")}, "u:255:id-1", "u"},
		{[]any{"promo", ""}, "promo:", "promo"},
	} {
		r := lock.Key(tc.parts...)
		require.Equal(t, tc.want, r.String(), "%v", tc.parts)
		require.Equal(t, tc.kind, r.Kind(), "%v", tc.parts)
	}
	require.Panics(t, func() { lock.Key() })
	require.Panics(t, func() { lock.Key("") })
	require.Panics(t, func() { lock.Key("order", 1.5) })
}

// FuzzKey checks that distinct part lists never give the same key, and that
// every key is a valid hash tag body.
func FuzzKey(f *testing.F) {
	f.Add("order", "42", "", "a:b", true)
	f.Add("a", "b:c", "a:b", "c", false)
	f.Add("x", "%3A", "x", ":", true)
	f.Fuzz(func(t *testing.T, a1, a2, b1, b2 string, twoParts bool) {
		if a1 == "" || b1 == "" {
			return // an empty kind is refused
		}
		ka, kb := lock.Key(a1, a2), lock.Key(b1)
		same := false // one part never equals two
		if twoParts {
			kb = lock.Key(b1, b2)
			same = a1 == b1 && a2 == b2
		}
		require.Equal(t, same, ka == kb, "Key(%q,%q) vs Key(%q,%q twoParts=%v)", a1, a2, b1, b2, twoParts)
		for _, k := range []lock.Resource{ka, kb} {
			require.False(t, strings.ContainsAny(k.String(), "{}"), "%q breaks the hash tag", k)
			require.True(t, strings.HasPrefix(k.String(), k.Kind()), "%q does not start with its kind %q", k, k.Kind())
		}
	})
}
