package admin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
)

// Shop is what the order routes serve: the checkout and the ledger it
// writes. With it in Deps a server takes orders (POST /api/v1/orders),
// shows them (GET /api/v1/orders/{id}) and stocks ticket types (POST
// /api/v1/ticket-types); without it those routes are not there.
type Shop struct {
	// Checkout reserves orders: a jobs.Service.
	Checkout Checkout
	// Ledger is the checkout's ledger: a ledger.Store.
	Ledger Ledger
}

// Checkout reserves an order's tickets: jobs.Service.Reserve, whose
// errors (jobs.ErrSoldOut, jobs.ErrOrderExists, jobs.ErrMixedEvents, a
// *middleware.PayloadError, ledger.ErrNotFound for an unknown ticket type)
// the routes turn into answers.
type Checkout interface {
	Reserve(ctx context.Context, orderID string, items []ledger.Item) (*ledger.Order, error)
}

// Ledger is what the routes read and write of the ledger (ledger.Store).
type Ledger interface {
	AddTicketType(ctx context.Context, tt ledger.TicketType) error
	TicketType(ctx context.Context, id string, fences ...ledger.Fence) (ledger.TicketType, int64, error)
	Order(ctx context.Context, id string, fences ...ledger.Fence) (*ledger.Order, error)
	OrderNotifications(ctx context.Context, orderID string) ([]ledger.OrderNotification, error)
}

// orderRequest is the body of POST /api/v1/orders.
type orderRequest struct {
	// OrderID names the order; a retry with the same ID and items gets
	// the same order. Empty: derived from the Idempotency-Key header, or
	// random without one.
	OrderID string        `json:"order_id,omitempty"`
	Items   []ledger.Item `json:"items"`
}

// orderJSON is an order in the API: the ledger's order, its payment and
// refunds included, with its notifications.
type orderJSON struct {
	ledger.Order
	Notifications []notificationJSON `json:"notifications"`
}

// notificationJSON is a notification of an order, and whether it went out.
type notificationJSON struct {
	ledger.Notification
	Delivered bool `json:"delivered"`
}

// ticketTypeJSON is a ticket type in the API, with how many are left.
type ticketTypeJSON struct {
	ledger.TicketType
	Available int64 `json:"available"`
}

// createOrder is POST /api/v1/orders: the checkout. It answers 201 with
// the order it reserved, or 200 with the order a retry (the same order ID
// or Idempotency-Key, the same items) reserved before; 409 when the order
// ID names an order with other items, or a ticket type is sold out.
func (s *Server) createOrder(w http.ResponseWriter, r *http.Request) {
	var req orderRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.OrderID == "" {
		req.OrderID = orderIDFor(r.Header.Get("Idempotency-Key"))
	}
	start := time.Now()
	o, err := s.deps.Shop.Checkout.Reserve(r.Context(), req.OrderID, req.Items)
	var perr *middleware.PayloadError
	switch {
	case err == nil:
		code := http.StatusCreated
		if o.Created.Before(start) {
			code = http.StatusOK // reserved by an earlier try
		}
		s.log.InfoContext(r.Context(), "order reserved through the admin API", slog.String("order_id", o.ID), slog.Bool("retry", code == http.StatusOK))
		w.Header().Set("Location", "/api/v1/orders/"+o.ID)
		writeJSON(w, code, orderJSON{Order: *o, Notifications: []notificationJSON{}})
	case errors.As(err, &perr):
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid order", Fields: map[string]string{perr.Field: perr.Problem}})
	case errors.Is(err, ledger.ErrNotFound):
		writeJSON(w, http.StatusBadRequest, apiError{Error: "unknown ticket type", Fields: map[string]string{"items": s.unknownTypes(r.Context(), req.Items)}})
	case errors.Is(err, jobs.ErrMixedEvents), errors.Is(err, ledger.ErrOtherEvent):
		writeError(w, http.StatusBadRequest, "the ticket types of an order must be of one event")
	case errors.Is(err, jobs.ErrSoldOut):
		writeError(w, http.StatusConflict, "sold out: not enough tickets left")
	case errors.Is(err, jobs.ErrOrderExists):
		writeError(w, http.StatusConflict, "order "+req.OrderID+" exists with other items")
	case errors.Is(err, lock.ErrNotAcquired), errors.Is(err, ledger.ErrStaleFence), errors.Is(err, ledger.ErrChanged):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "the tickets are busy; retry with the same order ID")
	default:
		s.log.ErrorContext(r.Context(), "reserve through the admin API", slog.String("order_id", req.OrderID), slog.Any("error", err))
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "reserve failed; retry with the same order ID")
	}
}

// unknownTypes names the ticket types of items the ledger does not have.
func (s *Server) unknownTypes(ctx context.Context, items []ledger.Item) string {
	var unknown []string
	for _, it := range items {
		if _, _, err := s.deps.Shop.Ledger.TicketType(ctx, it.TicketType); errors.Is(err, ledger.ErrNotFound) {
			unknown = append(unknown, it.TicketType)
		}
	}
	return fmt.Sprintf("no such ticket type: %q", unknown)
}

// orderIDFor is the order ID of a checkout that names none: one derived
// from its Idempotency-Key, so that a retry finds the order its first try
// reserved, or a random one.
func orderIDFor(key string) string {
	if key != "" {
		return idempotentID("order", key)
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return "o-" + hex.EncodeToString(b)
}

// getOrder is GET /api/v1/orders/{id}: the order, with its payment,
// refunds and notifications.
func (s *Server) getOrder(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	o, err := s.deps.Shop.Ledger.Order(r.Context(), id)
	var notes []ledger.OrderNotification
	if err == nil {
		notes, err = s.deps.Shop.Ledger.OrderNotifications(r.Context(), id)
	}
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		writeError(w, http.StatusNotFound, "no such order")
		return
	case err != nil:
		s.log.ErrorContext(r.Context(), "read order", slog.String("order_id", id), slog.Any("error", err))
		writeError(w, http.StatusServiceUnavailable, "read order failed; retry later")
		return
	}
	view := orderJSON{Order: *o, Notifications: make([]notificationJSON, 0, len(notes))}
	for _, n := range notes {
		view.Notifications = append(view.Notifications, notificationJSON{Notification: n.Notification, Delivered: n.Deliveries > 0})
	}
	writeJSON(w, http.StatusOK, view)
}

// Ticket type fields, as the checkout checks them (jobs: order and ticket
// type IDs; amounts in minor units; ISO 4217 codes).
var (
	ticketTypeID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)
)

// maxCapacity bounds a ticket type's capacity.
const maxCapacity = 10_000_000

// addTicketType is POST /api/v1/ticket-types: stock a ticket type to sell.
// It answers 201 with the new type, 200 with the type as it is when one
// with the same fields exists (a retry), and 409 when one with the ID
// exists with other fields: capacity, price and event never change once
// tickets may have been sold.
func (s *Server) addTicketType(w http.ResponseWriter, r *http.Request) {
	var tt ledger.TicketType
	if !decodeBody(w, r, &tt) {
		return
	}
	field, problem := "", ""
	switch {
	case !ticketTypeID.MatchString(tt.ID):
		field, problem = "id", "want 1-64 letters, digits, '-' or '_', starting with a letter or digit"
	case ledger.CheckEvent(tt.Event) != nil:
		field, problem = "event", ledger.CheckEvent(tt.Event).Error()
	case tt.Capacity < 1 || tt.Capacity > maxCapacity:
		field, problem = "capacity", fmt.Sprintf("want 1 to %d", maxCapacity)
	case tt.Price < 1 || tt.Price > jobs.MaxAmount:
		field, problem = "price", fmt.Sprintf("want a positive amount in minor units up to %d", int64(jobs.MaxAmount))
	case !currencyCode.MatchString(tt.Currency):
		field, problem = "currency", "want an ISO 4217 code such as EUR"
	}
	if field != "" {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid ticket type", Fields: map[string]string{field: problem}})
		return
	}
	ctx, ledg := r.Context(), s.deps.Shop.Ledger
	code := http.StatusOK
	had, _, err := ledg.TicketType(ctx, tt.ID)
	if errors.Is(err, ledger.ErrNotFound) {
		code, err = http.StatusCreated, ledg.AddTicketType(ctx, tt)
	}
	var avail int64
	if err == nil {
		// Read back: a concurrent request may have added it first.
		had, avail, err = ledg.TicketType(ctx, tt.ID)
	}
	switch {
	case err != nil:
		s.log.ErrorContext(ctx, "add ticket type", slog.String("ticket_type", tt.ID), slog.Any("error", err))
		writeError(w, http.StatusServiceUnavailable, "add ticket type failed; retry later")
	case had != tt:
		writeError(w, http.StatusConflict, "ticket type "+tt.ID+" exists with other fields")
	default:
		s.log.InfoContext(ctx, "ticket type stocked through the admin API", slog.String("ticket_type", tt.ID), slog.Bool("new", code == http.StatusCreated))
		writeJSON(w, code, ticketTypeJSON{TicketType: had, Available: avail})
	}
}

// decodeBody decodes a JSON request body into v, refusing unknown fields
// (a client's typo is not silently dropped) and what follows the value.
// It answers the error itself and returns false when it fails.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(r.Body)
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, "request body exceeds the limit")
		return false
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "malformed JSON body", Fields: map[string]string{"(body)": err.Error()}})
		return false
	}
	return true
}
