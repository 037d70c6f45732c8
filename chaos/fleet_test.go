package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/turnstilehq/turnstile/internal/netfault"
)

// adminToken guards the workers' admin APIs; the load uses it to enqueue.
const adminToken = "chaos-admin-token-0123456789"

// shopLockTTL is the TTL of the shop's locks: jobs.TaskTypes pins the
// order lock's (so TURNSTILE_LOCK_TTL does not change it) and the worker
// builds its inventory Locker with the same. The pauses are multiples of it.
const shopLockTTL = 5 * time.Second

var (
	buildOnce sync.Once
	binPath   string
	errBuild  error
)

// turnstileBin builds cmd/turnstile once per test binary, into a directory
// removed by TestMain, or returns CHAOS_BIN when set: a binary built
// elsewhere, such as a mutant from a copy of the tree.
func turnstileBin(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("CHAOS_BIN"); bin != "" {
		return bin
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "turnstile-chaos-")
		if err != nil {
			errBuild = err
			return
		}
		binDir = dir
		binPath = filepath.Join(dir, "turnstile")
		cmd := exec.CommandContext(t.Context(), "go", "build", "-o", binPath, "./cmd/turnstile") //nolint:gosec // G204: our temp dir as the output
		cmd.Dir = ".."                                                                           // the module root, from the package's directory
		if out, err := cmd.CombinedOutput(); err != nil {
			errBuild = fmt.Errorf("go build ./cmd/turnstile: %w\n%s", err, out)
		}
	})
	if errBuild != nil {
		t.Fatal(errBuild)
	}
	return binPath
}

var binDir string

// proc is one worker slot of the fleet: the process in it now, restarted
// into a new incarnation after a kill, as an orchestrator would.
type proc struct {
	ctx   context.Context // the run's
	slot  int
	admin string // host:port of its admin server, the same across restarts
	env   []string
	dir   string
	bin   string
	// proxy is the slot's own way to Redis, kept across incarnations, on
	// which the network faults act; nil when the fleet is not proxied.
	proxy *netfault.Proxy

	mu          sync.Mutex
	cmd         *exec.Cmd
	exited      chan struct{}
	incarnation int
	logs        []string // one log file per incarnation
	histories   []string // one history file per incarnation (TURNSTILE_HISTORY_FILE)
}

// fleet is the worker processes of one run.
type fleet struct {
	t     *testing.T
	procs []*proc
}

// freeAddr is a free 127.0.0.1 port, closed again: the worker binds it. The
// gap before it does is a race with other processes, which readiness
// catches.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// baseEnv is the test's environment without TURNSTILE_ variables, so a
// developer's own settings do not leak into the workers.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TURNSTILE_") {
			env = append(env, kv)
		}
	}
	return env
}

// sweepEvery is the workers' sweep period (TURNSTILE_SWEEP_EVERY): short,
// so that a notification a fault left undelivered is swept within a run.
const sweepEvery = 2 * time.Second

// fleetOptions say how a fleet's workers reach Redis.
type fleetOptions struct {
	// proxied puts each worker slot behind its own netfault proxy and
	// names its connections (proc.clientName), so that a network fault
	// acts on one worker. The soak leaves it off: it counts each worker's
	// connections to the Redis port.
	proxied bool
	// bin is the turnstile binary to run; empty means turnstileBin's.
	bin string
	// gatewayAddr is the gateway simulator's own Redis
	// (TURNSTILE_GATEWAY_REDIS_URL); empty: the workers' Redis.
	gatewayAddr string
}

// startFleet starts n workers connected straight to redisAddr; see
// startFleetWith.
func startFleet(t *testing.T, redisAddr string, n int) *fleet {
	t.Helper()
	return startFleetWith(t, redisAddr, n, fleetOptions{})
}

// startFleetWith starts n workers against redisAddr and waits until each
// one's admin server answers /readyz. Cleanup kills what is left by pid.
// The workers' logs and histories go to a temp dir, or, with CHAOS_KEEP
// set to a directory, to a new one in it that stays.
func startFleetWith(t *testing.T, redisAddr string, n int, opts fleetOptions) *fleet {
	t.Helper()
	bin := opts.bin
	if bin == "" {
		bin = turnstileBin(t)
	}
	f := &fleet{t: t}
	dir := t.TempDir()
	if keep := os.Getenv("CHAOS_KEEP"); keep != "" {
		// Logs and histories outlive the run, for the evidence of a failure.
		var err error
		if dir, err = os.MkdirTemp(keep, "fleet-"); err != nil {
			t.Fatal(err)
		}
		t.Logf("chaos: worker logs and histories kept in %s", dir)
	}
	for i := range n {
		p := &proc{ctx: t.Context(), slot: i, admin: freeAddr(t), dir: dir, bin: bin}
		redisURL := "redis://" + redisAddr
		if opts.proxied {
			p.proxy = netfault.Start(t, redisAddr)
			redisURL = "redis://" + p.proxy.Addr() + "/0?client_name=" + p.clientName()
		}
		p.env = append(baseEnv(),
			"TURNSTILE_REDIS_URL="+redisURL,
			"TURNSTILE_ADMIN_ADDR="+p.admin,
			"TURNSTILE_ADMIN_TOKEN="+adminToken,
			"TURNSTILE_LOCK_TTL=2s",
			"TURNSTILE_POLL_INTERVAL=10ms",
			"TURNSTILE_CONCURRENCY=8",
			"TURNSTILE_SHUTDOWN_TIMEOUT=5s",
			"TURNSTILE_LOG_FORMAT=json",
			"TURNSTILE_SWEEP_EVERY="+sweepEvery.String(),
		)
		if opts.gatewayAddr != "" {
			p.env = append(p.env, "TURNSTILE_GATEWAY_REDIS_URL=redis://"+opts.gatewayAddr)
		}
		f.procs = append(f.procs, p)
	}
	t.Cleanup(func() {
		for _, p := range f.procs {
			p.kill()
		}
	})
	for _, p := range f.procs {
		if err := p.start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range f.procs {
		if err := p.waitReady(t.Context(), 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// start runs a new incarnation with its own log file.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	logPath := filepath.Join(p.dir, fmt.Sprintf("worker-%d.%d.log", p.slot, p.incarnation))
	historyPath := filepath.Join(p.dir, fmt.Sprintf("history-%d.%d.jsonl", p.slot, p.incarnation))
	p.incarnation++
	logFile, err := os.Create(logPath) //nolint:gosec // G304: in the test's temp dir
	if err != nil {
		return err
	}
	// ctx is the run's: when it ends the process is killed, as Cleanup would.
	cmd := exec.CommandContext(p.ctx, p.bin, "worker") //nolint:gosec // G204: the binary built above, or CHAOS_BIN set by the developer
	cmd.Env, cmd.Stdout, cmd.Stderr = append(slices.Clone(p.env), "TURNSTILE_HISTORY_FILE="+historyPath), logFile, logFile
	if err := cmd.Start(); err != nil {
		return errors.Join(fmt.Errorf("chaos: start worker %d: %w", p.slot, err), logFile.Close())
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // a killed worker's exit status is the point, not an error
		_ = logFile.Close()
		close(exited)
	}()
	p.cmd, p.exited, p.logs, p.histories = cmd, exited, append(p.logs, logPath), append(p.histories, historyPath)
	return nil
}

// waitReady polls the admin server's /readyz (Redis answers) until it says
// 200, the process exits, or d passes.
func (p *proc) waitReady(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	client := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("chaos: worker %d exited before it was ready; log %s:\n%s", p.slot, p.lastLog(), tail(p.lastLog()))
		case <-ctx.Done():
			return fmt.Errorf("chaos: worker %d not ready after %s; log %s:\n%s", p.slot, d, p.lastLog(), tail(p.lastLog()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (p *proc) lastLog() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs[len(p.logs)-1]
}

// clientName is the name the slot's connections give Redis (CLIENT
// SETNAME) in a proxied fleet, the same across incarnations.
func (p *proc) clientName() string { return fmt.Sprintf("chaos-worker-%d", p.slot) }

// signal sends sig to the current incarnation.
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("chaos: signal %v to worker %d: %w", sig, p.slot, err)
	}
	return nil
}

// crash SIGKILLs the current incarnation and waits until it is reaped.
func (p *proc) crash() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("chaos: worker %d not reaped 10s after SIGKILL", p.slot)
	}
}

// stop ends the current incarnation as an orchestrator does: SIGCONT in
// case it is paused, SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	select {
	case <-exited:
		return nil
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // may have exited in between
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(grace):
		p.kill()
		return fmt.Errorf("chaos: worker %d did not stop %s after SIGTERM", p.slot, grace)
	}
}

// kill SIGKILLs the current incarnation if it runs, and waits for it.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill() // already gone is fine
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
	}
}

// stopAll stops every worker gracefully, so that their last log lines are
// written, and reports the ones that did not stop.
func (f *fleet) stopAll() error {
	var errs []error
	for _, p := range f.procs {
		errs = append(errs, p.stop(15*time.Second))
	}
	return errors.Join(errs...)
}

// logFiles are every incarnation's log files.
func (f *fleet) logFiles() []string {
	var files []string
	for _, p := range f.procs {
		p.mu.Lock()
		files = append(files, p.logs...)
		p.mu.Unlock()
	}
	return files
}

// historyFiles are every incarnation's history files. One killed before
// its first fenced operation may have none: those are left out.
func (f *fleet) historyFiles() []string {
	var files []string
	for _, p := range f.procs {
		p.mu.Lock()
		for _, h := range p.histories {
			if _, err := os.Stat(h); err == nil {
				files = append(files, h)
			}
		}
		p.mu.Unlock()
	}
	return files
}

// tail is the end of a file, for failure messages.
func tail(path string) string {
	b, err := os.ReadFile(path) //nolint:gosec // G304: a log this test wrote
	if err != nil {
		return err.Error()
	}
	const n = 4096
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
