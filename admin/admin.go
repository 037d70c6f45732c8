package admin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/telemetry"
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
	// Token guards every route but /healthz, /readyz, /metrics and
	// /api/v1/openapi.json. Empty leaves the reads open (so keep Addr on
	// loopback) and refuses every change.
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
	// Shop, when set, serves the order routes: POST /api/v1/orders, GET
	// /api/v1/orders/{id} and POST /api/v1/ticket-types.
	Shop *Shop
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

// New returns a Server. It logs which routes answer without the token,
// loudly when Addr is beyond loopback and no token is set: anyone who can
// reach it may read the locks, the queues and the tasks' states.
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
	s := &Server{cfg: cfg, deps: deps, log: log, limiter: newLimiter(cfg.EnqueueRate)}
	s.logExposure()
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

// routes are every route, behind sameOrigin. Open whatever the token:
// /healthz and /readyz (probes carry no credentials), /metrics, the
// locks page's stylesheet (static, shows nothing) and the API's OpenAPI
// document (/api/v1/openapi.json: the API's shape, which the repository
// publishes anyway, and no data; client generators fetch it without
// credentials).
//
// /metrics is open on purpose. Prometheus can send a bearer token, but the
// only token here is the admin token, which also force-releases locks and
// enqueues payments: every scraper's configuration would hold that power.
// The metrics carry counts by task type, lock kind, outcome and queue,
// never a lock key, task ID or payload (telemetry keeps raw keys out of
// labels), so they tell a reader the traffic, not the business.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeText(w, http.StatusOK, "ok") })
	mux.HandleFunc("GET /readyz", s.ready)
	if s.deps.Metrics != nil {
		mux.Handle("GET /metrics", s.deps.Metrics)
	}
	mux.HandleFunc("GET /locks/style.css", s.locksStyle)
	mux.Handle("GET /locks/{$}", s.reading(http.HandlerFunc(s.locks)))
	// The API's routes come from the table its OpenAPI document is made
	// of (openapi.go), so that none goes undocumented.
	for _, rt := range apiRoutes() {
		if h := rt.handler(s); h != nil {
			mux.Handle(rt.method+" "+rt.pattern, h)
		}
	}
	if s.dashboard != nil {
		mux.Handle(dashboardPath+"/", s.guardDashboard(s.dashboard))
	}
	return telemetry.HTTPHandler(sameOrigin(mux), s.deps.TracerProvider)
}

// logExposure says at start which routes answer without the token: a
// warning when that is anyone who can reach a non-loopback address.
func (s *Server) logExposure() {
	open := []string{"/healthz", "/readyz"}
	if s.deps.Metrics != nil {
		open = append(open, "/metrics")
	}
	open = append(open, openAPIPath)
	if s.cfg.Token != "" {
		s.log.Info("admin token set: every route but these needs it", slog.String("addr", s.cfg.Addr), slog.Any("open", open))
		return
	}
	open = append(open, "/locks/", "/api/v1/locks")
	if s.deps.Inspector != nil {
		open = append(open, "/api/v1/tasks/{queue}/{id}")
	}
	if s.deps.Shop != nil {
		open = append(open, "/api/v1/orders/{id}")
	}
	if s.deps.Dashboard != nil {
		open = append(open, "/dashboard/ (read-only)")
	}
	if !loopback(s.cfg.Addr) {
		s.log.Warn("ADMIN SERVER REACHABLE BEYOND LOOPBACK WITHOUT A TOKEN: anyone who can reach it reads the held locks, their owners, the queues, the tasks' states and the orders (changes are refused); set TURNSTILE_ADMIN_TOKEN to require it on every route but /healthz, /readyz, /metrics and /api/v1/openapi.json",
			slog.String("addr", s.cfg.Addr), slog.Any("open", open))
		return
	}
	s.log.Info("admin server has no token: these routes answer any local process, changes are refused; set TURNSTILE_ADMIN_TOKEN to require it",
		slog.String("addr", s.cfg.Addr), slog.Any("open", open))
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
