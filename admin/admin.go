// Package admin is the HTTP surface operators and other services use: health
// and readiness, Prometheus metrics, the held locks (list, inspect, and a
// forced release that needs the admin token and the holder's fence), and an
// enqueue API that checks payloads as the worker does.
//
//	srv, err := admin.New(admin.Config{Token: os.Getenv("TURNSTILE_ADMIN_TOKEN")}, admin.Deps{
//		Locker: locker, Producer: producer, Metrics: tel.MetricsHandler(), Ready: ready,
//	})
//	addr, err := srv.Start(ctx)
//	defer srv.Shutdown(ctx)
//
// It listens on 127.0.0.1 unless told otherwise. Every route that changes
// something needs the token (Authorization: Bearer <token>), compared in
// constant time; without a configured token those routes are refused.
package admin

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/worker"
)

// Defaults of a Config.
const (
	DefaultAddr        = "127.0.0.1:8090"
	DefaultMaxBody     = 64 << 10
	DefaultEnqueueRate = 100 // per second, with as much burst
)

// Config configures a Server. The zero value serves on DefaultAddr with
// every mutating route refused.
type Config struct {
	// Addr is the listen address (default DefaultAddr, loopback only).
	Addr string
	// Token guards the routes that change something. Empty refuses them.
	Token string
	// MaxBody bounds a request body (default DefaultMaxBody bytes).
	MaxBody int64
	// EnqueueRate bounds enqueues per second, all callers together
	// (default DefaultEnqueueRate).
	EnqueueRate float64
}

// Deps are what the routes serve.
type Deps struct {
	Locker   *lock.Locker
	Producer *worker.Producer
	// Metrics serves /metrics (telemetry.Providers.MetricsHandler).
	Metrics http.Handler
	// Ready reports whether the process can do its work (Redis reachable,
	// worker started); /readyz answers 503 with its error.
	Ready func(context.Context) error
	// Inspector, when set, serves GET /api/v1/tasks/{queue}/{id}.
	Inspector *asynq.Inspector
	// Tracker, when set, feeds the locks page's recent activity; give it
	// to the Lockers as an Observer (lock.Observers).
	Tracker *Tracker
	// Dashboard, when set, serves the asynq dashboard (asynqmon) at
	// /dashboard/ on connections of its own made from it.
	Dashboard asynq.RedisConnOpt
	// TracerProvider records forced releases as spans (default the otel
	// global).
	TracerProvider trace.TracerProvider
	Logger         *slog.Logger
}

// Server is the admin HTTP server.
type Server struct {
	cfg       Config
	deps      Deps
	log       *slog.Logger
	limiter   *limiter
	http      *http.Server
	dashboard *asynqmon.HTTPHandler
	handler   http.Handler
	served    chan error // Serve's result, once Start has run
}

// New returns a Server. It logs loudly when Addr is beyond loopback and no
// token is set: anyone who can reach it may read the locks and queues.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg.Addr = cmp.Or(cfg.Addr, DefaultAddr)
	cfg.MaxBody = cmp.Or(cfg.MaxBody, DefaultMaxBody)
	cfg.EnqueueRate = cmp.Or(cfg.EnqueueRate, DefaultEnqueueRate)
	if deps.TracerProvider == nil {
		deps.TracerProvider = otel.GetTracerProvider()
	}
	if deps.Locker == nil || deps.Producer == nil {
		return nil, errors.New("admin: Deps needs a Locker and a Producer")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Token == "" && !loopback(cfg.Addr) {
		log.Warn("ADMIN SERVER REACHABLE BEYOND LOOPBACK WITHOUT A TOKEN: anyone who can reach it reads locks and queues; set TURNSTILE_ADMIN_TOKEN",
			slog.String("addr", cfg.Addr))
	}
	s := &Server{cfg: cfg, deps: deps, log: log, limiter: newLimiter(cfg.EnqueueRate)}
	if deps.Dashboard != nil {
		s.dashboard = newDashboard(deps.Dashboard, cfg.Token)
	}
	s.handler = s.routes()
	s.http = &http.Server{
		Addr:              cfg.Addr,
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	return s, nil
}

// loopback reports whether addr's host is a loopback address or name.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Handler returns the routes.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeText(w, http.StatusOK, "ok") })
	mux.HandleFunc("GET /readyz", s.ready)
	if s.deps.Metrics != nil {
		mux.Handle("GET /metrics", s.deps.Metrics)
	}
	mux.HandleFunc("GET /locks/{$}", s.locks)
	mux.HandleFunc("GET /locks/style.css", s.locksStyle)
	mux.HandleFunc("GET /api/v1/locks", s.listLocks)
	mux.HandleFunc("GET /api/v1/locks/{resource...}", s.getLock)
	mux.HandleFunc("DELETE /api/v1/locks/{resource...}", s.mutating(s.forceRelease))
	mux.HandleFunc("POST /api/v1/tasks/{type}", s.mutating(s.enqueue))
	if s.deps.Inspector != nil {
		mux.HandleFunc("GET /api/v1/tasks/{queue}/{id}", s.task)
	}
	if s.dashboard != nil {
		mux.Handle(dashboardPath+"/", s.guardDashboard(s.dashboard))
	}
	return mux
}

// Start listens on Config.Addr and serves in the background until
// Shutdown. It returns the address it listens on.
func (s *Server) Start(ctx context.Context) (net.Addr, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	s.served = make(chan error, 1)
	go func() { s.served <- s.http.Serve(ln) }()
	return ln.Addr(), nil
}

// Shutdown stops accepting requests, waits, until ctx ends, for those in
// flight, and closes the dashboard's connections. It reports an error that
// ended serving early.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if s.served != nil {
		if serr := <-s.served; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
	}
	if s.dashboard != nil {
		err = errors.Join(err, s.dashboard.Close())
	}
	if err != nil {
		return fmt.Errorf("admin: shutdown: %w", err)
	}
	return nil
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if s.deps.Ready != nil {
		if err := s.deps.Ready(r.Context()); err != nil {
			writeText(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
	}
	writeText(w, http.StatusOK, "ready")
}

// mutating guards a route with the token: 403 when the server has none
// (such routes are off), 401 when the request's is missing or wrong. The
// request body is bounded.
func (s *Server) mutating(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Token == "" {
			writeError(w, http.StatusForbidden, "this server has no admin token configured: changes are refused")
			return
		}
		given, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(given), []byte(s.cfg.Token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="turnstile"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong admin token")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
		next(w, r)
	}
}
