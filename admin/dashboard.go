package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
)

// dashboardPath is where the asynq dashboard lives.
const dashboardPath = "/dashboard"

// newDashboard returns asynqmon on its own Redis connections (it closes
// them itself), read-only unless a token is set. Its Prometheus pages need
// a Prometheus server, not our /metrics, so they stay off.
func newDashboard(conn asynq.RedisConnOpt, token string) *asynqmon.HTTPHandler {
	return asynqmon.New(asynqmon.Options{
		RootPath:         dashboardPath,
		RedisConnOpt:     conn,
		ReadOnly:         token == "",
		PayloadFormatter: asynqmon.PayloadFormatterFunc(redactPayload),
		ResultFormatter:  asynqmon.ResultFormatterFunc(func(_ string, b []byte) string { return redactPayload("", b) }),
	})
}

// guardDashboard puts the token in front of asynqmon, which has no
// authentication of its own: with a token configured every request needs
// it, as a bearer token or as the password of HTTP Basic auth (what a
// browser can send), and sameOrigin, around every route, keeps other
// sites from using the browser's cached credentials. Without a token the
// dashboard is read-only.
func (s *Server) guardDashboard(next http.Handler) http.Handler {
	return s.reading(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	}))
}

// sensitive matches the JSON keys whose values the dashboard must not
// show: card data and secrets.
var sensitive = regexp.MustCompile(`(?i)card|pan$|cvv|cvc|iban|secret|password|token`)

// redactPayload shows a JSON payload with sensitive values replaced, and
// nothing of any other payload but its size.
func redactPayload(_ string, payload []byte) string {
	var v any
	if err := json.Unmarshal(payload, &v); err != nil {
		return fmt.Sprintf("(%d bytes, not JSON)", len(payload))
	}
	b, err := json.Marshal(redact(v))
	if err != nil {
		return fmt.Sprintf("(%d bytes)", len(payload))
	}
	return string(b)
}

func redact(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if sensitive.MatchString(k) {
				v[k] = "[redacted]"
			} else {
				v[k] = redact(x)
			}
		}
	case []any:
		for i, x := range v {
			v[i] = redact(x)
		}
	}
	return v
}
