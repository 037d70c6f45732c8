package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// What a service in another language does, with plain HTTP: pay for an
// order and refund it through the enqueue API of a real worker serving
// the shop, then see each task completed and no lock left.
func TestEndToEnd_RefundThroughTheAPI(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	// The checkout, which another service runs before any job.
	store := ledger.New(rdb, "")
	require.NoError(t, store.AddTicketType(t.Context(), ledger.TicketType{ID: "gold", Capacity: 10, Price: 2500, Currency: "EUR"}))
	shop := &jobs.Service{Store: store, Client: asynq.NewClientFromRedisClient(rdb)}
	order, err := shop.Reserve(t.Context(), "o-e2e", []ledger.Item{{TicketType: "gold", Quantity: 2}})
	require.NoError(t, err)

	addr := freeAddr(t)
	const token = "e2e-admin-token-0123456" //nolint:gosec // G101: a test's own token for its own server.
	env := map[string]string{
		"TURNSTILE_REDIS_URL": "redis://" + srv.Addr(), "TURNSTILE_POLL_INTERVAL": "10ms",
		"TURNSTILE_ADMIN_ADDR": addr, "TURNSTILE_ADMIN_TOKEN": token,
	}
	logs, stop := startShopWorker(t, env)
	base := "http://" + addr

	// enqueue posts a task and waits until the API reports it completed.
	enqueue := func(typ, payload string) {
		t.Helper()
		var created struct {
			TaskID string `json:"task_id"`
			Queue  string `json:"queue"`
		}
		require.Eventually(t, func() bool {
			code, body := httpDo(t, http.MethodPost, base+"/api/v1/tasks/"+typ, token, payload)
			if code != http.StatusCreated {
				return false
			}
			require.NoError(t, json.Unmarshal([]byte(body), &created))
			return true
		}, 10*time.Second, 50*time.Millisecond, "enqueue %s; log:\n%s", typ, logs)
		require.Eventually(t, func() bool {
			_, body := httpDo(t, http.MethodGet, base+"/api/v1/tasks/"+created.Queue+"/"+created.TaskID, token, "")
			return strings.Contains(body, `"state":"completed"`)
		}, 30*time.Second, 50*time.Millisecond, "%s did not complete; log:\n%s", typ, logs)
	}
	enqueue(jobs.KindConfirm, `{"order_id":"o-e2e","webhook_id":"wh-1","amount":5000,"currency":"EUR"}`)
	enqueue(jobs.KindRefund, `{"order_id":"o-e2e","refund_id":"r-1","amount":5000,"currency":"EUR"}`)

	code, body := httpDo(t, http.MethodGet, base+"/api/v1/locks", token, "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `"locks":[]`, "no lock left")
	got, err := store.Order(t.Context(), order.ID)
	require.NoError(t, err)
	require.Equal(t, ledger.StateRefunded, got.State)

	stop()
}
