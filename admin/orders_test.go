package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/admin"
	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/gateway"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/worker"
)

// shopFixture is a server with the order routes, over a shop on its own
// miniredis.
type shopFixture struct {
	*fixture
	svc   *jobs.Service
	store *ledger.Store
}

func newShopFixture(t *testing.T, cfg admin.Config) *shopFixture {
	t.Helper()
	_, rdb := redistest.MiniClient(t)
	locker, err := lock.New(rdb, lock.Config{TTL: time.Minute})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, locker.Close()) })
	client := asynq.NewClientFromRedisClient(rdb)
	producer, err := worker.NewProducer(client, nil, (&jobs.Service{}).TaskTypes()...)
	require.NoError(t, err)
	gw, err := gateway.NewSimulator(rdb, gateway.Config{})
	require.NoError(t, err)
	store := ledger.New(rdb, "")
	svc := &jobs.Service{Store: store, Gateway: gw, Locker: locker, Client: client}
	var logs bytes.Buffer
	inspect := asynq.NewInspectorFromRedisClient(rdb)
	s, err := admin.New(cfg, admin.Deps{
		Locker: locker, Producer: producer, Shop: &admin.Shop{Checkout: svc, Ledger: store}, Inspector: inspect,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	require.NoError(t, err)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		srv.Close()
		require.NoError(t, s.Shutdown(context.Background()))
	})
	return &shopFixture{fixture: &fixture{srv: srv, rdb: rdb, locker: locker, inspect: inspect, logs: &logs}, svc: svc, store: store}
}

type orderView struct {
	ID       string        `json:"id"`
	Number   string        `json:"number"`
	State    ledger.State  `json:"state"`
	Amount   int64         `json:"amount"`
	Currency string        `json:"currency"`
	Items    []ledger.Item `json:"items"`
	Paid     int64         `json:"paid"`
	// Notifications are the order's, with whether each went out.
	Notifications []struct {
		ID        string `json:"id"`
		Kind      string `json:"kind"`
		Delivered bool   `json:"delivered"`
	} `json:"notifications"`
}

func decodeOrder(t *testing.T, body string) orderView {
	t.Helper()
	var o orderView
	require.NoError(t, json.Unmarshal([]byte(body), &o), body)
	return o
}

func TestTicketTypes(t *testing.T) {
	t.Parallel()
	f := newShopFixture(t, admin.Config{Token: token, EnqueueRate: 1000})
	post := func(auth, body string) (int, string) {
		return f.do(t, http.MethodPost, "/api/v1/ticket-types", auth, body)
	}
	const gold = `{"id":"gold","event":"arena","name":"Gold","capacity":3,"price":2500,"currency":"EUR"}`
	code, _ := post("", gold)
	require.Equal(t, http.StatusUnauthorized, code)
	code, body := post(token, `{"id":"gold","event":"arena","name":"Gold","capacity":3,"price":2500,"currency":"eur"}`)
	require.Equal(t, http.StatusBadRequest, code, body)
	require.Contains(t, body, `"currency"`)
	code, body = post(token, `{"id":"bad id","event":"arena","name":"x","capacity":3,"price":2500,"currency":"EUR"}`)
	require.Equal(t, http.StatusBadRequest, code, body)
	require.Contains(t, body, `"id"`)

	code, body = post(token, gold)
	require.Equal(t, http.StatusCreated, code, body)
	require.JSONEq(t, `{"id":"gold","event":"arena","name":"Gold","capacity":3,"price":2500,"currency":"EUR","available":3}`, body)
	code, body = post(token, gold)
	require.Equal(t, http.StatusOK, code, "the same type again is a retry: %s", body)
	code, body = post(token, `{"id":"gold","event":"arena","name":"Gold","capacity":300,"price":2500,"currency":"EUR"}`)
	require.Equal(t, http.StatusConflict, code, body)
}

func TestOrders(t *testing.T) {
	t.Parallel()
	f := newShopFixture(t, admin.Config{Token: token, EnqueueRate: 1000})
	ctx := t.Context()
	for _, tt := range []ledger.TicketType{
		{ID: "gold", Event: "arena", Capacity: 3, Price: 2500, Currency: "EUR"},
		{ID: "bar", Event: "jazz", Capacity: 10, Price: 900, Currency: "EUR"},
	} {
		require.NoError(t, f.store.AddTicketType(ctx, tt))
	}
	post := func(auth, body string, header ...string) (int, string) {
		return f.do(t, http.MethodPost, "/api/v1/orders", auth, body, header...)
	}
	get := func(id string) (int, string) { return f.do(t, http.MethodGet, "/api/v1/orders/"+id, token, "") }

	code, _ := post("", `{"items":[{"ticket_type":"gold","quantity":1}]}`)
	require.Equal(t, http.StatusUnauthorized, code)
	for name, bad := range map[string]string{
		"malformed":     `{"items":[`,
		"unknown field": `{"items":[{"ticket_type":"gold","quantity":1}],"coupon":"x"}`,
		"no items":      `{"items":[]}`,
		"zero quantity": `{"items":[{"ticket_type":"gold","quantity":0}]}`,
		"bad order ID":  `{"order_id":"no spaces","items":[{"ticket_type":"gold","quantity":1}]}`,
		"unknown type":  `{"items":[{"ticket_type":"platinum","quantity":1}]}`,
		"mixed events":  `{"items":[{"ticket_type":"gold","quantity":1},{"ticket_type":"bar","quantity":1}]}`,
	} {
		code, body := post(token, bad)
		require.Equal(t, http.StatusBadRequest, code, "%s: %s", name, body)
	}
	_, body := post(token, `{"items":[{"ticket_type":"platinum","quantity":1}]}`)
	require.Contains(t, body, "platinum", "the unknown type is named")

	code, body = post(token, `{"items":[{"ticket_type":"gold","quantity":2}]}`, "Idempotency-Key", "checkout-1")
	require.Equal(t, http.StatusCreated, code, body)
	first := decodeOrder(t, body)
	require.Equal(t, ledger.StateReserved, first.State)
	require.Equal(t, int64(5000), first.Amount)
	require.NotEmpty(t, first.Number)
	code, body = post(token, `{"items":[{"ticket_type":"gold","quantity":2}]}`, "Idempotency-Key", "checkout-1")
	require.Equal(t, http.StatusOK, code, "a retry: %s", body)
	require.Equal(t, first.ID, decodeOrder(t, body).ID)
	require.Equal(t, first.Number, decodeOrder(t, body).Number, "reserved once")
	code, body = post(token, `{"items":[{"ticket_type":"gold","quantity":1}]}`, "Idempotency-Key", "checkout-1")
	require.Equal(t, http.StatusConflict, code, "the same key, other items: %s", body)

	code, body = post(token, `{"order_id":"o-2","items":[{"ticket_type":"gold","quantity":2}]}`)
	require.Equal(t, http.StatusConflict, code, "one gold left: %s", body)
	require.Contains(t, body, "sold out")
	code, body = post(token, `{"order_id":"o-2","items":[{"ticket_type":"gold","quantity":1}]}`)
	require.Equal(t, http.StatusCreated, code, body)
	require.Equal(t, "o-2", decodeOrder(t, body).ID)

	code, body = get(first.ID)
	require.Equal(t, http.StatusOK, code, body)
	got := decodeOrder(t, body)
	require.Equal(t, first.Number, got.Number)
	require.Empty(t, got.Notifications)

	require.NoError(t, f.svc.Confirm(ctx, jobs.ConfirmArgs{OrderID: first.ID, WebhookID: "wh-1", Amount: 5000, Currency: "EUR"}))
	require.Eventually(t, func() bool {
		_, body := get(first.ID)
		got = decodeOrder(t, body)
		return len(got.Notifications) == 1 && got.Notifications[0].Delivered
	}, 5*time.Second, 10*time.Millisecond, "the confirmation is shown, delivered")
	require.Equal(t, ledger.StatePaid, got.State)
	require.Equal(t, int64(5000), got.Paid)
	require.Equal(t, "confirmed", got.Notifications[0].Kind)

	code, _ = get("o-nope")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = f.do(t, http.MethodGet, "/api/v1/orders/"+first.ID, "", "")
	require.Equal(t, http.StatusUnauthorized, code)
	code, _ = f.do(t, http.MethodGet, "/api/v1/orders/"+first.ID, "wrong", "")
	require.Equal(t, http.StatusUnauthorized, code)
	code, _ = post("wrong", `{"items":[{"ticket_type":"gold","quantity":1}]}`)
	require.Equal(t, http.StatusUnauthorized, code)
	require.NotContains(t, f.logs.String(), token, "the token never reaches the log")
}

// As with enqueue, a server without a token refuses checkouts and shows
// orders to whoever reaches it (loopback by default).
func TestOrders_WithoutAToken(t *testing.T) {
	t.Parallel()
	f := newShopFixture(t, admin.Config{})
	require.NoError(t, f.store.AddTicketType(t.Context(), ledger.TicketType{ID: "gold", Event: "arena", Capacity: 3, Price: 2500, Currency: "EUR"}))
	code, body := f.do(t, http.MethodPost, "/api/v1/orders", "anything", `{"order_id":"o-1","items":[{"ticket_type":"gold","quantity":1}]}`)
	require.Equal(t, http.StatusForbidden, code, body)
	code, body = f.do(t, http.MethodPost, "/api/v1/ticket-types", "anything", `{"id":"silver","event":"arena","name":"Silver","capacity":3,"price":900,"currency":"EUR"}`)
	require.Equal(t, http.StatusForbidden, code, body)
	_, err := f.store.Order(t.Context(), "o-1")
	require.ErrorIs(t, err, ledger.ErrNotFound, "nothing was reserved")

	_, err = f.svc.Reserve(t.Context(), "o-2", []ledger.Item{{TicketType: "gold", Quantity: 1}})
	require.NoError(t, err)
	code, body = f.do(t, http.MethodGet, "/api/v1/orders/o-2", "", "")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, ledger.StateReserved, decodeOrder(t, body).State)
}

// An Idempotency-Key makes a retried enqueue answer 200 with the task the
// first created, once: the task ID is derived from the task type and the
// key, so that the same key on another type is another task.
func TestEnqueue_IdempotencyKey(t *testing.T) {
	t.Parallel()
	f := newShopFixture(t, admin.Config{Token: token, EnqueueRate: 1000})
	type answer struct {
		TaskID    string `json:"task_id"`
		Queue     string `json:"queue"`
		Duplicate bool   `json:"duplicate"`
	}
	post := func(typ, body string, header ...string) (int, answer) {
		t.Helper()
		code, got := f.do(t, http.MethodPost, "/api/v1/tasks/"+typ, token, body, header...)
		var a answer
		require.NoError(t, json.Unmarshal([]byte(got), &a), got)
		return code, a
	}
	const confirm = `{"order_id":"o-1001","webhook_id":"wh-1","amount":5000,"currency":"EUR"}`
	code, first := post(jobs.KindConfirm, confirm, "Idempotency-Key", "wh-1")
	require.Equal(t, http.StatusCreated, code)
	// The README's walkthrough shows this ID: the same type and key give
	// it on every server.
	require.Equal(t, answer{TaskID: "idem-83ae25646a00e81ee5ab68ee", Queue: "critical"}, first)
	code, again := post(jobs.KindConfirm, confirm, "Idempotency-Key", "wh-1")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, answer{TaskID: first.TaskID, Queue: "critical", Duplicate: true}, again)
	pending, err := f.inspect.ListPendingTasks("critical")
	require.NoError(t, err)
	require.Len(t, pending, 1, "enqueued once")

	code, refund := post(jobs.KindRefund, `{"order_id":"o-1001","refund_id":"r-1","amount":5000,"currency":"EUR"}`, "Idempotency-Key", "wh-1")
	require.Equal(t, http.StatusCreated, code, "the same key on another type is another request")
	require.NotEqual(t, first.TaskID, refund.TaskID)
	require.Equal(t, "default", refund.Queue)

	code, other := post(jobs.KindConfirm, `{"order_id":"o-1001","webhook_id":"wh-2","amount":5000,"currency":"EUR"}`)
	require.Equal(t, http.StatusCreated, code)
	code, otherAgain := post(jobs.KindConfirm, `{"order_id":"o-1001","webhook_id":"wh-2","amount":5000,"currency":"EUR"}`)
	require.Equal(t, http.StatusCreated, code, "without a key each request is a task")
	require.NotEqual(t, other.TaskID, otherAgain.TaskID)
}
