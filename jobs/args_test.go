package jobs_test

import (
	"errors"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/middleware"
)

func TestDecode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		payload, field string
	}{
		{`{"order_id":"o-1","refund_id":"r-1","amount":500,"currency":"EUR"}`, ""},
		{`{"order_id":"o-1","refund_id":"r-1","amount":0,"currency":"EUR"}`, "amount"},
		{`{"order_id":"o-1","refund_id":"r-1","amount":-5,"currency":"EUR"}`, "amount"},
		{`{"order_id":"o-1","refund_id":"r-1","amount":5,"currency":"eur"}`, "currency"},
		{`{"order_id":"","refund_id":"r-1","amount":5,"currency":"EUR"}`, "order_id"},
		{`{"order_id":"o 1","refund_id":"r-1","amount":5,"currency":"EUR"}`, "order_id"},
		{`{"order_id":"o-1","amount":5,"currency":"EUR"}`, "refund_id"},
		{`{"order_id":"o-1","refund_id":"r-1","amount":5,"currency":"EUR","card":"4111"}`, "(body)"},
		{`{"order_id":"o-1"} {}`, "(body)"},
		{`not json`, "(body)"},
	} {
		_, err := jobs.Decode[jobs.RefundArgs]([]byte(tc.payload))
		if tc.field == "" {
			require.NoError(t, err, tc.payload)
			continue
		}
		var perr *middleware.PayloadError
		require.ErrorAs(t, err, &perr, tc.payload)
		require.Equal(t, tc.field, perr.Field, tc.payload)
	}
}

func TestNewTask(t *testing.T) {
	t.Parallel()
	task, err := jobs.NewTask(t.Context(), jobs.RefundArgs{OrderID: "o-1", RefundID: "r-1", Amount: 500, Currency: "EUR"})
	require.NoError(t, err)
	require.Equal(t, jobs.KindRefund, task.Type())
	got, err := jobs.Decode[jobs.RefundArgs](task.Payload())
	require.NoError(t, err)
	require.Equal(t, int64(500), got.Amount)
	_, err = jobs.NewTask(t.Context(), jobs.RevokeArgs{})
	var perr *middleware.PayloadError
	require.ErrorAs(t, err, &perr)
	require.Equal(t, "order_id", perr.Field)
}

func fuzzDecode[T jobs.Args](f *testing.F, seeds ...string) {
	f.Helper()
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		a, err := jobs.Decode[T](payload)
		if err != nil {
			var perr *middleware.PayloadError
			if !errors.As(err, &perr) {
				t.Fatalf("error %v is not a *PayloadError", err)
			}
			return
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("decoded args that do not validate: %v", err)
		}
		if _, err := jobs.NewTask(t.Context(), a, asynq.TaskID("x")); err != nil {
			t.Fatalf("valid args make no task: %v", err)
		}
	})
}

func FuzzDecodeConfirm(f *testing.F) {
	fuzzDecode[jobs.ConfirmArgs](f, `{"order_id":"o-1","webhook_id":"w","amount":1,"currency":"EUR"}`, `{}`, `[]`, `{"amount":1e400}`)
}

func FuzzDecodeRefund(f *testing.F) {
	fuzzDecode[jobs.RefundArgs](f, `{"order_id":"o-1","refund_id":"r","amount":1,"currency":"USD"}`, `null`, `{"amount":"5"}`)
}

func FuzzDecodeRevoke(f *testing.F) {
	fuzzDecode[jobs.RevokeArgs](f, `{"order_id":"o-1"}`, `{"order_id":"\u0000"}`)
}
