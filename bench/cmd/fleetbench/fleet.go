package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/turnstilehq/turnstile/bench/internal/redisserver"
)

const (
	// readyTimeout bounds a worker's start, until its /readyz answers 200.
	readyTimeout = 30 * time.Second
	// stopTimeout is how long a worker gets to exit after SIGTERM before it
	// is killed; its own shutdown timeout (workerShutdown) is shorter.
	stopTimeout    = 10 * time.Second
	workerShutdown = "5s"
)

// build compiles the turnstile command once into dir. The package path,
// not a directory, so that it works from the repository root and from
// bench/ alike (go.work, or bench's replace directive).
func build(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "turnstile")
	//nolint:gosec // G204: the output path is our own temporary directory.
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/turnstilehq/turnstile/cmd/turnstile")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/turnstile: %w\n%s", err, out)
	}
	return bin, nil
}

// workerProc is one `turnstile worker` process.
type workerProc struct {
	cmd    *exec.Cmd
	admin  string // host:port of its admin server, for /readyz
	log    string // its stderr and stdout
	exited chan struct{}
}

// startWorkers starts n workers of bin on url, each with concurrency
// jobs at once and its admin server on its own free loopback port, and
// waits until every one answers /readyz: the admin server starts after
// the worker's asynq server, so then it is serving.
func startWorkers(ctx context.Context, bin, dir, url string, n, concurrency int) (ws []*workerProc, err error) {
	defer func() {
		if err != nil {
			err = errors.Join(err, stopWorkers(ws))
			ws = nil
		}
	}()
	for i := range n {
		w, err := startWorker(ctx, bin, filepath.Join(dir, fmt.Sprintf("worker-%d.log", i)), url, concurrency)
		if err != nil {
			return ws, err
		}
		ws = append(ws, w)
	}
	for _, w := range ws {
		if err := w.awaitReady(ctx); err != nil {
			return ws, err
		}
	}
	return ws, nil
}

func startWorker(ctx context.Context, bin, logPath, url string, concurrency int) (*workerProc, error) {
	port, err := redisserver.FreePort(ctx)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	logFile, err := os.Create(logPath) //nolint:gosec // G304: a path in our own temporary directory.
	if err != nil {
		return nil, err
	}
	defer func() { _ = logFile.Close() }() // the child keeps its own descriptor
	//nolint:gosec,noctx // G204: bin is the binary we built; no ctx: a worker is stopped by pid in stop, with SIGTERM first.
	cmd := exec.Command(bin, "worker")
	cmd.Env = append(cleanEnv(),
		"TURNSTILE_REDIS_URL="+url,
		"TURNSTILE_CONCURRENCY="+strconv.Itoa(concurrency),
		"TURNSTILE_ADMIN_ADDR="+addr,
		"TURNSTILE_SHUTDOWN_TIMEOUT="+workerShutdown,
		"TURNSTILE_LOG_LEVEL=warn",
		"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s worker: %w", bin, err)
	}
	w := &workerProc{cmd: cmd, admin: addr, log: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // a worker that exits early is reported by awaitReady or by its log
		close(w.exited)
	}()
	return w, nil
}

// cleanEnv is this process's environment without TURNSTILE_ and OTEL_
// variables, so that a setting of the caller's cannot change what is
// measured.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TURNSTILE_") && !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	return env
}

func (w *workerProc) awaitReady(ctx context.Context) error {
	deadline := time.Now().Add(readyTimeout)
	client := &http.Client{Timeout: time.Second}
	for {
		//nolint:gosec // G704: the worker's admin address is a loopback port we picked.
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.admin+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req) //nolint:gosec // G704: as above, our own loopback port.
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-w.exited:
			return fmt.Errorf("worker (pid %d) exited at start; log:\n%s", w.cmd.Process.Pid, w.logTail())
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("worker (pid %d) not ready after %s; log:\n%s", w.cmd.Process.Pid, readyTimeout, w.logTail())
		}
	}
}

// stop sends SIGTERM, so the worker releases its locks and leaves asynq's
// server list, and kills it by pid if it has not exited after
// stopTimeout.
func (w *workerProc) stop() error {
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM worker (pid %d): %w", w.cmd.Process.Pid, err)
	}
	select {
	case <-w.exited:
		return nil
	case <-time.After(stopTimeout):
	}
	if err := w.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill worker (pid %d): %w", w.cmd.Process.Pid, err)
	}
	<-w.exited
	return fmt.Errorf("worker (pid %d) ignored SIGTERM for %s and was killed", w.cmd.Process.Pid, stopTimeout)
}

func stopWorkers(ws []*workerProc) error {
	var errs []error
	for _, w := range ws {
		errs = append(errs, w.stop())
	}
	return errors.Join(errs...)
}

// workersCPU is the CPU time the workers have used so far, together.
func workersCPU(ws []*workerProc) (time.Duration, error) {
	var total time.Duration
	for _, w := range ws {
		d, err := pidCPU(w.cmd.Process.Pid)
		if err != nil {
			return 0, err
		}
		total += d
	}
	return total, nil
}

func (w *workerProc) logTail() string { return redisserver.Tail(w.log) }
