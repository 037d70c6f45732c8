package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/admin"
	"github.com/turnstilehq/turnstile/jobs"
)

// Every request the package's tests send to /api/v1 through
// http.DefaultClient, and every answer, is checked against the OpenAPI
// document: the request's path and method must be in it, the answer's
// status and body must be what it says for the operation, and a request
// it refuses must not succeed. A failed check is the request's error, so
// the test that sent it fails there (its do helper requires no error).
func init() {
	http.DefaultClient.Transport = &validating{next: http.DefaultTransport}
}

// loadOpenAPI loads the document as a client generator would, and
// validates it.
func loadOpenAPI(ctx context.Context) (*openapi3.T, routers.Router, error) {
	b, err := admin.OpenAPI()
	if err != nil {
		return nil, nil, err
	}
	doc, err := openapi3.NewLoader().LoadFromData(b)
	if err != nil {
		return nil, nil, fmt.Errorf("load: %w", err)
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, nil, fmt.Errorf("validate: %w", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, nil, fmt.Errorf("router: %w", err)
	}
	return doc, router, nil
}

var openAPIRouter = sync.OnceValues(func() (routers.Router, error) {
	_, r, err := loadOpenAPI(context.Background())
	return r, err
})

// validating is a RoundTripper that checks /api/v1 traffic against the
// document.
type validating struct{ next http.RoundTripper }

// authenticate stands in for the server's token check: the document only
// says where the token goes; the handler tests check its value.
func authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	r := in.RequestValidationInput.Request
	switch in.SecuritySchemeName {
	case "bearer":
		if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			return nil
		}
	case "basic":
		if _, _, ok := r.BasicAuth(); ok {
			return nil
		}
	}
	return errors.New("no credentials for " + in.SecuritySchemeName)
}

func (v *validating) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasPrefix(req.URL.Path, "/api/v1/") {
		return v.next.RoundTrip(req)
	}
	router, err := openAPIRouter()
	if err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	var body []byte
	if req.Body != nil {
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		_ = req.Body.Close()
	}
	check := req.Clone(req.Context())
	check.Body = io.NopCloser(bytes.NewReader(body))
	if len(body) > 0 && check.Header.Get("Content-Type") == "" {
		// The server reads every body as JSON, whatever its type; the
		// tests, like curl users, often send none.
		check.Header.Set("Content-Type", "application/json")
	}
	route, params, err := router.FindRoute(check)
	if err != nil {
		return nil, fmt.Errorf("openapi: %s %s is not in the document: %w", req.Method, req.URL.Path, err)
	}
	opts := &openapi3filter.Options{AuthenticationFunc: authenticate, IncludeResponseStatus: true}
	in := &openapi3filter.RequestValidationInput{Request: check, PathParams: params, Route: route, Options: opts}
	refused := openapi3filter.ValidateRequest(req.Context(), in)

	send := req.Clone(req.Context())
	send.Body = io.NopCloser(bytes.NewReader(body))
	resp, err := v.next.RoundTrip(send)
	if err != nil {
		return nil, err
	}
	got, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(got))
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: opts}
	if err := openapi3filter.ValidateResponse(req.Context(), out.SetBodyBytes(got)); err != nil {
		return nil, fmt.Errorf("openapi: the answer to %s %s (%d %s) is not what the document says: %w", req.Method, req.URL.Path, resp.StatusCode, got, err)
	}
	if refused != nil && resp.StatusCode < 400 {
		return nil, fmt.Errorf("openapi: the document refuses %s %s (%w), the server answered %d", req.Method, req.URL.Path, refused, resp.StatusCode)
	}
	return resp, nil
}

// The document is a valid OpenAPI 3.1 document that kin-openapi loads,
// and the server serves it, without the token, as it is.
func TestOpenAPI_IsValidAndServed(t *testing.T) {
	t.Parallel()
	doc, _, err := loadOpenAPI(t.Context())
	require.NoError(t, err)
	require.Equal(t, "3.1.0", doc.OpenAPI)
	f := newFixture(t, admin.Config{Token: token}, nil)
	code, body := f.do(t, http.MethodGet, "/api/v1/openapi.json", "", "")
	require.Equal(t, http.StatusOK, code)
	want, err := admin.OpenAPI()
	require.NoError(t, err)
	require.JSONEq(t, string(want), body)
}

// Each task type the shop's worker serves has its typed operation, whose
// body schema is reflected from the args type the worker decodes into:
// its fields, all required, and no others.
func TestOpenAPI_TaskPayloadsAreTheWorkersTypes(t *testing.T) {
	t.Parallel()
	doc, _, err := loadOpenAPI(t.Context())
	require.NoError(t, err)
	samples := map[string]string{
		jobs.KindConfirm: `{"order_id":"o-1","webhook_id":"wh-1","amount":5000,"currency":"EUR"}`,
		jobs.KindRefund:  `{"order_id":"o-1","refund_id":"r-1","amount":5000,"currency":"EUR"}`,
		jobs.KindRevoke:  `{"order_id":"o-1"}`,
	}
	for _, tt := range (&jobs.Service{}).TaskTypes() {
		item := doc.Paths.Value("/api/v1/tasks/" + tt.Type)
		require.NotNil(t, item, "%s has no typed operation", tt.Type)
		schema := item.Post.RequestBody.Value.Content.Get("application/json").Schema.Value
		sample, ok := samples[tt.Type]
		require.True(t, ok, "add a sample payload of %s", tt.Type)
		var fields map[string]any
		require.NoError(t, json.Unmarshal([]byte(sample), &fields))
		require.NoError(t, tt.Check([]byte(sample)), "the worker takes the sample")
		require.NoError(t, schema.VisitJSON(fields, openapi3.EnableJSONSchema2020()), "the document takes the sample")
		for name := range fields {
			without := map[string]any{}
			for k, v := range fields {
				if k != name {
					without[k] = v
				}
			}
			b, err := json.Marshal(without)
			require.NoError(t, err)
			require.Error(t, tt.Check(b), "the worker refuses %s without %s", tt.Type, name)
			require.Error(t, schema.VisitJSON(without, openapi3.EnableJSONSchema2020()), "the document refuses %s without %s", tt.Type, name)
		}
		fields["typo"] = "x"
		b, err := json.Marshal(fields)
		require.NoError(t, err)
		require.Error(t, tt.Check(b), "the worker refuses an unknown field")
		require.Error(t, schema.VisitJSON(fields, openapi3.EnableJSONSchema2020()), "the document refuses an unknown field")
	}
}
