package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"unicode"

	"github.com/invopop/jsonschema"

	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

//go:generate go test -run TestOpenAPI_MatchesTheCommittedFile -update .

// openAPIPath serves the API's OpenAPI document, without the token: it
// holds the API's shape, which api/openapi.json publishes anyway, and no
// data.
const openAPIPath = "/api/v1/openapi.json"

// An apiRoute is one route of the API: how routes() registers it and how
// the OpenAPI document describes it, in one place, so that no route goes
// undocumented.
type apiRoute struct {
	method, pattern string
	// handler serves the route on s, or is nil when s lacks what it needs
	// (a Deps field): the route is then not registered.
	handler func(s *Server) http.Handler
	// ops are the route's operations in the document; most routes have
	// one, at their pattern's path.
	ops []pathOp
}

// A pathOp is an operation of the document at a path.
type pathOp struct {
	path string
	op   operation
}

// apiRoutes are the routes under /api/v1, each with its operations.
func apiRoutes() []apiRoute {
	read := func(h func(*Server) http.HandlerFunc) func(*Server) http.Handler {
		return func(s *Server) http.Handler { return s.reading(h(s)) }
	}
	write := func(h func(*Server) http.HandlerFunc) func(*Server) http.Handler {
		return func(s *Server) http.Handler { return s.mutating(h(s)) }
	}
	withShop := func(wrap func(func(*Server) http.HandlerFunc) func(*Server) http.Handler, h func(*Server) http.HandlerFunc) func(*Server) http.Handler {
		return func(s *Server) http.Handler {
			if s.deps.Shop == nil {
				return nil
			}
			return wrap(h)(s)
		}
	}
	return []apiRoute{
		{
			method: http.MethodGet, pattern: openAPIPath,
			handler: func(*Server) http.Handler { return http.HandlerFunc(serveOpenAPI) },
			ops: []pathOp{{openAPIPath, operation{
				ID: "getOpenAPI", Tag: "meta", Auth: authNone,
				Summary:   "This document",
				Responses: responses{http.StatusOK: {"the OpenAPI document", anyObject}},
			}}},
		},
		{
			method: http.MethodGet, pattern: "/api/v1/locks",
			handler: read(func(s *Server) http.HandlerFunc { return s.listLocks }),
			ops: []pathOp{{"/api/v1/locks", operation{
				ID: "listLocks", Tag: "locks", Auth: authRead,
				Summary:     "List held locks",
				Description: "A page of the held locks, read with SCAN, and the cursor of the next page (\"0\" after the last).",
				Query: []queryParam{
					{"cursor", "The next_cursor of the previous page (default 0: the first page).", false, stringSchema},
					{"count", "How many locks to look at for this page, 1 to 1000 (default 100).", false, schemaJSON{"type": "integer", "minimum": 1, "maximum": 1000}},
				},
				Responses: responses{http.StatusOK: {"a page of held locks", ref(lockPageJSON{})}, http.StatusBadRequest: errBadRequest},
			}}},
		},
		{
			method: http.MethodGet, pattern: "/api/v1/locks/{resource...}",
			handler: read(func(s *Server) http.HandlerFunc { return s.getLock }),
			ops: []pathOp{{"/api/v1/locks/{resource}", operation{
				ID: "getLock", Tag: "locks", Auth: authRead,
				Summary:   "Show a held lock",
				Responses: responses{http.StatusOK: {"the lock", ref(lockJSON{})}, http.StatusNotFound: {"no lock is held on the resource", ref(apiError{})}},
			}}},
		},
		{
			method: http.MethodDelete, pattern: "/api/v1/locks/{resource...}",
			handler: write(func(s *Server) http.HandlerFunc { return s.forceRelease }),
			ops: []pathOp{{"/api/v1/locks/{resource}", operation{
				ID: "forceReleaseLock", Tag: "locks", Auth: authWrite,
				Summary:     "Force a stuck lock free",
				Description: "Frees the resource only while its holder's fence is the given one, so that a newer holder is never freed by mistake. Who and why go to the log.",
				Query: []queryParam{
					{"fence", "The holder's fencing token, as GET shows it.", true, schemaJSON{"type": "integer", "minimum": 1}},
					{"reason", "Why the lock is forced, for the log.", true, schemaJSON{"type": "string", "minLength": 1}},
				},
				Responses: responses{
					http.StatusNoContent: {"released", nil}, http.StatusBadRequest: errBadRequest,
					http.StatusNotFound: {"no lock is held on the resource", ref(apiError{})},
					http.StatusConflict: {"a newer holder has the resource; nothing was released", ref(apiError{})},
				},
			}}},
		},
		{
			method: http.MethodPost, pattern: "/api/v1/tasks/{type}",
			handler: write(func(s *Server) http.HandlerFunc { return s.enqueue }),
			ops:     enqueueOps(),
		},
		{
			method: http.MethodGet, pattern: "/api/v1/tasks/{queue}/{id}",
			handler: func(s *Server) http.Handler {
				if s.deps.Inspector == nil {
					return nil
				}
				return s.reading(http.HandlerFunc(s.task))
			},
			ops: []pathOp{{"/api/v1/tasks/{queue}/{id}", operation{
				ID: "getTask", Tag: "tasks", Auth: authRead,
				Summary:     "Show where a task stands",
				Description: "Its state, retries and last error; not its payload, which may hold card data. Tasks enqueued through this API are kept an hour once done.",
				Responses:   responses{http.StatusOK: {"the task", ref(taskJSON{})}, http.StatusNotFound: {"no such task", ref(apiError{})}},
			}}},
		},
		{
			method: http.MethodPost, pattern: "/api/v1/ticket-types",
			handler: withShop(write, func(s *Server) http.HandlerFunc { return s.addTicketType }),
			ops: []pathOp{{"/api/v1/ticket-types", operation{
				ID: "addTicketType", Tag: "orders", Auth: authWrite,
				Summary:     "Stock a ticket type",
				Description: "Creates a ticket type with all of its capacity available. Sending the same type again answers 200 with it as it stands; a type with the same ID and other fields is refused: capacity, price and event never change once tickets may be sold.",
				Body:        ref(ledger.TicketType{}),
				Responses: responses{
					http.StatusCreated: {"stocked", ref(ticketTypeJSON{})}, http.StatusOK: {"stocked before, with the same fields", ref(ticketTypeJSON{})},
					http.StatusBadRequest: errBadRequest, http.StatusConflict: {"a ticket type with this ID exists with other fields", ref(apiError{})},
				},
			}}},
		},
		{
			method: http.MethodPost, pattern: "/api/v1/orders",
			handler: withShop(write, func(s *Server) http.HandlerFunc { return s.createOrder }),
			ops: []pathOp{{"/api/v1/orders", operation{
				ID: "createOrder", Tag: "orders", Auth: authWrite, Idempotent: true,
				Summary: "Reserve tickets: the checkout",
				Description: "Reserves the items under their inventory locks, gives the order the next order number and schedules its revoke for when the payment window closes; pay it with a payment:confirm task for its amount. " +
					"A retry gets the same order: send the same order_id, or, without one, the same Idempotency-Key (the order ID is derived from it). The same ID with other items is refused. All items must be of one event.",
				Body: ref(orderRequest{}),
				Responses: responses{
					http.StatusCreated: {"reserved", ref(orderJSON{})}, http.StatusOK: {"reserved before, by an earlier try of this request", ref(orderJSON{})},
					http.StatusBadRequest: errBadRequest,
					http.StatusConflict:   {"sold out, or the order ID names an order with other items", ref(apiError{})},
				},
			}}},
		},
		{
			method: http.MethodGet, pattern: "/api/v1/orders/{id}",
			handler: withShop(read, func(s *Server) http.HandlerFunc { return s.getOrder }),
			ops: []pathOp{{"/api/v1/orders/{id}", operation{
				ID: "getOrder", Tag: "orders", Auth: authRead,
				Summary:     "Show an order",
				Description: "The order as the ledger holds it: its state (reserved, paid, partially_refunded, refunded, revoked), what was paid and refunded, and the notifications its transitions recorded, each with whether it went out.",
				Responses:   responses{http.StatusOK: {"the order", ref(orderJSON{})}, http.StatusNotFound: {"no such order", ref(apiError{})}},
			}}},
		},
	}
}

// enqueueOps are the operations of POST /api/v1/tasks/{type}: one per
// task type of the shop, with the payload type its worker decodes, so
// that a generated client gets a typed method each; and the generic one,
// for task types a deployment adds.
func enqueueOps() []pathOp {
	responsesFor := func() responses {
		return responses{
			http.StatusCreated:               {"enqueued", ref(enqueued{})},
			http.StatusOK:                    {"a task with this Idempotency-Key exists: it was enqueued before", ref(enqueued{})},
			http.StatusBadRequest:            errBadRequest,
			http.StatusNotFound:              {"the worker serves no such task type", ref(apiError{})},
			http.StatusRequestEntityTooLarge: {"the body is over the server's limit", ref(apiError{})},
			http.StatusTooManyRequests:       {"over the server's enqueue rate; retry after a second", ref(apiError{})},
		}
	}
	const about = "The body is the task's payload, checked as the worker checks it: a refused field is named in the answer. An Idempotency-Key header makes a retried request enqueue once: a second request with it answers 200 with the first task's ID while that task exists."
	args := []jobs.Args{jobs.ConfirmArgs{}, jobs.RefundArgs{}, jobs.RevokeArgs{}}
	summaries := map[string]string{
		jobs.KindConfirm: "Confirm an order's payment (the gateway's webhook)",
		jobs.KindRefund:  "Refund part or all of an order's payment",
		jobs.KindRevoke:  "Revoke a reserved order whose payment did not arrive",
	}
	ops := make([]pathOp, 0, len(args)+1)
	for _, a := range args {
		ops = append(ops, pathOp{"/api/v1/tasks/" + a.Kind(), operation{
			ID: "enqueue" + operationName(a.Kind()), Tag: "tasks", Auth: authWrite, Idempotent: true,
			Summary: summaries[a.Kind()], Description: about,
			Body: ref(a), Responses: responsesFor(),
		}})
	}
	return append(ops, pathOp{"/api/v1/tasks/{type}", operation{
		ID: "enqueueTask", Tag: "tasks", Auth: authWrite, Idempotent: true,
		Summary:     "Enqueue a task of any type the worker serves",
		Description: about + " The typed operations document the shop's task types; this one takes any other the worker was built with.",
		Body:        anyObject, Responses: responsesFor(),
	}})
}

// operationName is a task kind as a name: "payment:confirm" -> "PaymentConfirm".
func operationName(kind string) string {
	var b strings.Builder
	upper := true
	for _, r := range kind {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
			upper = true
			continue
		}
		if upper {
			r, upper = unicode.ToUpper(r), false
		}
		b.WriteRune(r)
	}
	return b.String()
}

// lockPageJSON is GET /api/v1/locks's answer (listLocks), as the document
// shows it: the cursor is a decimal string, so that a client whose
// numbers are doubles keeps it exact.
type lockPageJSON struct {
	Locks      []lockJSON `json:"locks"`
	NextCursor string     `json:"next_cursor"`
}

// auth is who may call an operation.
type auth int

const (
	authNone  auth = iota // open whatever the token
	authRead              // the token, as bearer or Basic password, when one is configured
	authWrite             // the token as a bearer token, and a server with one
)

// schemaJSON is a JSON Schema (2020-12, as OpenAPI 3.1 has it).
type schemaJSON map[string]any

var (
	stringSchema = schemaJSON{"type": "string"}
	anyObject    = schemaJSON{"type": "object"}
)

// ref is a reference to the component schema of v's type, which the
// document reflects from it.
func ref(v any) schemaJSON {
	return schemaJSON{"$ref": "#/components/schemas/" + schemaName(reflect.TypeOf(v))}
}

// A queryParam is a query parameter of an operation.
type queryParam struct {
	name, description string
	required          bool
	schema            schemaJSON
}

// A response is what an operation answers with a status; a nil schema
// has no body.
type response struct {
	description string
	schema      schemaJSON
}

type responses map[int]response

var errBadRequest = response{"a parameter or the body is refused: the error names it", ref(apiError{})}

// An operation is one method at one path, as written in routes' table.
type operation struct {
	ID, Tag, Summary, Description string
	Auth                          auth
	// Idempotent operations honour an Idempotency-Key header.
	Idempotent bool
	Query      []queryParam
	Body       schemaJSON
	Responses  responses
}

// pathParam matches a path parameter in a document path.
var pathParam = regexp.MustCompile(`\{([^}]+)\}`)

// document is the operation as the document writes it.
func (o operation) document(path string) map[string]any {
	params := []map[string]any{}
	for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
		params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": stringSchema})
	}
	for _, q := range o.Query {
		params = append(params, map[string]any{"name": q.name, "in": "query", "required": q.required, "description": q.description, "schema": q.schema})
	}
	if o.Idempotent {
		params = append(params, map[string]any{
			"name": "Idempotency-Key", "in": "header", "required": false, "schema": stringSchema,
			"description": "Makes a retried request act once: the retry answers 200 with what the first created.",
		})
	}
	res := map[string]any{}
	all := o.Responses
	if o.Auth != authNone {
		all = mergeResponses(all, responses{http.StatusUnauthorized: {"missing or wrong admin token", ref(apiError{})}})
	}
	if o.Auth == authWrite {
		all = mergeResponses(all, responses{
			http.StatusForbidden:             {"the server has no admin token configured (changes are off), or a browser sent it from another origin", ref(apiError{})},
			http.StatusRequestEntityTooLarge: {"the body is over the server's limit", ref(apiError{})},
			http.StatusServiceUnavailable:    {"Redis did not answer, or the resource is busy; retry later (with the same Idempotency-Key or ID)", ref(apiError{})},
		})
	}
	if o.Auth == authRead {
		all = mergeResponses(all, responses{http.StatusServiceUnavailable: {"Redis did not answer; retry later", ref(apiError{})}})
	}
	for code, r := range all {
		out := map[string]any{"description": r.description}
		if r.schema != nil {
			out["content"] = map[string]any{"application/json": map[string]any{"schema": r.schema}}
		}
		res[fmt.Sprint(code)] = out
	}
	op := map[string]any{"operationId": o.ID, "summary": o.Summary, "tags": []string{o.Tag}, "responses": res}
	if o.Description != "" {
		op["description"] = o.Description
	}
	if len(params) > 0 {
		op["parameters"] = params
	}
	if o.Body != nil {
		op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": o.Body}}}
	}
	switch o.Auth {
	case authRead: // {} : open when the server has no token
		op["security"] = []map[string][]string{{"bearer": {}}, {"basic": {}}, {}}
	case authWrite:
		op["security"] = []map[string][]string{{"bearer": {}}}
	case authNone:
		op["security"] = []map[string][]string{}
	}
	return op
}

func mergeResponses(a, b responses) responses {
	out := responses{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if _, ok := out[k]; !ok {
			out[k] = v
		}
	}
	return out
}

// schemaRoots are the types the document's component schemas are
// reflected from (with the types they hold): the payloads the worker
// decodes (jobs' Args) and the API's own bodies. A ref to a type not
// reflected here fails the document's validation in the tests.
var schemaRoots = []reflect.Type{
	reflect.TypeFor[jobs.ConfirmArgs](), reflect.TypeFor[jobs.RefundArgs](), reflect.TypeFor[jobs.RevokeArgs](),
	reflect.TypeFor[apiError](), reflect.TypeFor[enqueued](), reflect.TypeFor[taskJSON](),
	reflect.TypeFor[lockJSON](), reflect.TypeFor[lockPageJSON](),
	reflect.TypeFor[ledger.TicketType](), reflect.TypeFor[ticketTypeJSON](),
	reflect.TypeFor[orderRequest](), reflect.TypeFor[orderJSON](),
}

// schemaNames are the names in the document of the types whose Go name
// is not the one a client should see.
var schemaNames = map[reflect.Type]string{
	reflect.TypeFor[apiError]():         "Error",
	reflect.TypeFor[enqueued]():         "Enqueued",
	reflect.TypeFor[taskJSON]():         "Task",
	reflect.TypeFor[lockJSON]():         "Lock",
	reflect.TypeFor[lockPageJSON]():     "LockPage",
	reflect.TypeFor[orderRequest]():     "OrderRequest",
	reflect.TypeFor[orderJSON]():        "Order",
	reflect.TypeFor[notificationJSON](): "Notification",
	reflect.TypeFor[ticketTypeJSON]():   "StockedTicketType",
}

func schemaName(t reflect.Type) string {
	if n, ok := schemaNames[t]; ok {
		return n
	}
	return t.Name()
}

// orderStates are the states an order is in, which the document lists
// (ledger.State is a string to Go's reflection).
var orderStates = []ledger.State{
	ledger.StateReserved, ledger.StatePaid, ledger.StatePartiallyRefunded, ledger.StateRefunded, ledger.StateRevoked,
}

// mapType gives the schemas of the types reflection alone says too little
// of; nil leaves a type to the reflector.
func mapType(t reflect.Type) *jsonschema.Schema {
	if t == reflect.TypeFor[ledger.State]() {
		enum := make([]any, len(orderStates))
		for i, st := range orderStates {
			enum[i] = string(st)
		}
		return &jsonschema.Schema{Type: "string", Enum: enum}
	}
	return nil
}

// refPattern finds the references the reflector writes.
var refPattern = regexp.MustCompile(`"#/\$defs/`)

// componentSchemas reflects the schemas of roots, and of the struct types
// they hold, as the document's components: references point there.
func componentSchemas(roots []reflect.Type) (map[string]json.RawMessage, error) {
	r := &jsonschema.Reflector{Anonymous: true, Namer: schemaName, Mapper: mapType}
	out := map[string]json.RawMessage{}
	for _, t := range roots {
		s := r.ReflectFromType(t)
		s.Version = ""
		defs := s.Definitions
		s.Definitions = nil
		for name, d := range defs {
			b, err := json.Marshal(d)
			if err != nil {
				return nil, err
			}
			out[name] = refPattern.ReplaceAll(b, []byte(`"#/components/schemas/`))
		}
		// The root is a reference to its own definition.
		if s.Ref != "" && s.Ref != "#/$defs/"+schemaName(t) {
			return nil, fmt.Errorf("openapi: %s reflects to %s", t, s.Ref)
		}
	}
	return out, nil
}

// openAPI builds the document from apiRoutes.
func openAPI() ([]byte, error) {
	paths := map[string]map[string]any{}
	for _, rt := range apiRoutes() {
		for _, po := range rt.ops {
			item := paths[po.path]
			if item == nil {
				item = map[string]any{}
				paths[po.path] = item
			}
			method := strings.ToLower(rt.method)
			if _, dup := item[method]; dup {
				return nil, fmt.Errorf("openapi: %s %s described twice", rt.method, po.path)
			}
			item[method] = po.op.document(po.path)
		}
	}
	schemas, err := componentSchemas(schemaRoots)
	if err != nil {
		return nil, err
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":   "turnstile admin API",
			"version": "1",
			"description": "Locks, tasks and orders of a turnstile worker. The admin server listens on 127.0.0.1 unless told otherwise. " +
				"With an admin token configured, reads take it as a bearer token or as the Basic auth password, and changes only as a bearer token; " +
				"without one, reads are open and changes are refused (403). Errors are {\"error\": ..., \"fields\": {...}}.",
		},
		"paths": paths,
		"components": map[string]any{
			"schemas": schemas,
			"securitySchemes": map[string]any{
				"bearer": map[string]any{"type": "http", "scheme": "bearer", "description": "The admin token (TURNSTILE_ADMIN_TOKEN)."},
				"basic":  map[string]any{"type": "http", "scheme": "basic", "description": "The admin token as the password, any user name: what a browser sends. Reads only."},
			},
		},
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	return buf.Bytes(), nil
}

// built is the document, made once.
var built struct {
	sync.Once
	doc []byte
	err error
}

// OpenAPI returns the API's OpenAPI 3.1 document, as the server serves it
// at /api/v1/openapi.json and the repository keeps it in api/openapi.json.
// The schemas of the task payloads are reflected from the types the
// worker decodes them into (package jobs), so they follow the code.
func OpenAPI() ([]byte, error) {
	built.Do(func() { built.doc, built.err = openAPI() })
	return built.doc, built.err
}

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	doc, err := OpenAPI()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(doc)
}
