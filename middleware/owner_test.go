package middleware_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/middleware"
)

func TestOwner(t *testing.T) {
	t.Parallel()
	o := middleware.Owner{TaskType: "payment:refund", TaskID: "refund:o-1@x|y", Worker: "host-a:42", Since: time.UnixMilli(1_700_000_000_123)}
	s := o.String()
	require.NotContains(t, s, "|", "the lock reserves '|'")
	got := middleware.ParseOwner(s)
	require.Equal(t, "payment:refund", got.TaskType)
	require.Equal(t, "refund:o-1@x/y", got.TaskID, "an '@' in the task ID survives")
	require.Equal(t, "host-a:42", got.Worker)
	require.True(t, got.Since.Equal(o.Since))

	require.Equal(t, middleware.Owner{TaskType: "billing-cron"}, middleware.ParseOwner("billing-cron"), "a lock taken outside the guard")
	require.Equal(t, middleware.Owner{TaskType: "a#b"}, middleware.ParseOwner("a#b"))
}
