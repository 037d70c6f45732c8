package admin

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRedactPayload(t *testing.T) {
	t.Parallel()
	got := redactPayload("payment:confirm", []byte(`{"order_id":"o-1","card":{"number":"4111111111111111","cvv":"123"},"items":[{"api_token":"t"}]}`))
	require.JSONEq(t, `{"order_id":"o-1","card":"[redacted]","items":[{"api_token":"[redacted]"}]}`, got)
	require.NotContains(t, got, "4111")
	require.Equal(t, "(3 bytes, not JSON)", redactPayload("x", []byte{0xff, 0, 1}))
}
