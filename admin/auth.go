package admin

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// realm is the Basic auth realm of every route a browser opens, so that
// one login serves both the locks page and the dashboard.
const realm = "turnstile admin"

// authorized reports whether r carries the token: as a bearer token, or,
// with basicOK, as the password of HTTP Basic auth (the user name is
// ignored). It compares in constant time.
func (s *Server) authorized(r *http.Request, basicOK bool) bool {
	given, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok && basicOK {
		_, given, ok = r.BasicAuth()
	}
	return ok && subtle.ConstantTimeCompare([]byte(given), []byte(s.cfg.Token)) == 1
}

// reading guards a route that only shows something. With a token
// configured it needs the token, as a bearer token or as the Basic auth
// password (what a browser can send); without one it is open, and the
// loopback default address is what keeps it private.
func (s *Server) reading(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Token != "" && !s.authorized(r, true) {
			// Basic first: a browser prompts for it and then caches it for
			// the locks page and the dashboard alike.
			w.Header().Add("WWW-Authenticate", `Basic realm="`+realm+`"`)
			w.Header().Add("WWW-Authenticate", `Bearer realm="`+realm+`"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong admin token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// mutating guards a route of the API that changes something: 403 when the
// server has no token (such routes are off), 401 when the request's is
// missing or wrong. It takes the token only as a bearer token, never as
// Basic auth: a browser attaches cached Basic credentials to any request,
// also to a form another site submits, but never a bearer token. The
// request body is bounded.
func (s *Server) mutating(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Token == "" {
			writeError(w, http.StatusForbidden, "this server has no admin token configured: changes are refused")
			return
		}
		if !s.authorized(r, false) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong admin token")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
		next(w, r)
	}
}

// sameOrigin refuses, with 403, a request that changes something
// (anything but GET, HEAD and OPTIONS) when a browser says it comes from
// another origin: Sec-Fetch-Site other than same-origin or none, or, from
// a browser too old to send that, an Origin whose host is not the
// request's. The dashboard needs this: it takes the token as the Basic
// auth password, which the browser caches and would attach to a form that
// another site posts to /dashboard/api/queues/{q}:pause. Its own buttons
// are same-origin fetches and pass; clients that are not browsers send
// neither header and pass, and still need the token.
func sameOrigin(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused: changes come from this server's own pages or from clients that are not browsers")
	}))
	return cop.Handler(next)
}
