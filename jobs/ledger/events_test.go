package ledger

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// The caches stay bounded however many orders a worker sees, and keep
// what was used recently.
func TestEventCache_Bounded(t *testing.T) {
	t.Parallel()
	c := newEventCache(4)
	c.put("hot", "rock")
	for i := range 100 {
		c.put(fmt.Sprint(i), "jazz")
		_, ok := c.get("hot")
		require.True(t, ok, "a hot entry was evicted after %d puts", i)
		require.LessOrEqual(t, len(c.cur)+len(c.old), 2*4)
	}
	_, ok := c.get("0")
	require.False(t, ok, "nothing was evicted")
	e, ok := c.get("99")
	require.True(t, ok)
	require.Equal(t, "jazz", e)
}
