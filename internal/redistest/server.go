package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// readyTimeout bounds how long one Start waits for redis-server to
	// answer, across all of its attempts.
	readyTimeout = 10 * time.Second
	// probeTimeout bounds one readiness probe (dial, write, read).
	probeTimeout = 250 * time.Millisecond
	// probeInterval is the pause between readiness probes.
	probeInterval = 10 * time.Millisecond
	// maxAttempts bounds how often Start launches redis-server when it exits
	// at once, e.g. because another process took the port first.
	maxAttempts = 5
	// killTimeout bounds the wait for a process to be reaped after SIGKILL.
	killTimeout = 10 * time.Second
	// logTail is how much of redis-server's log a failure message quotes.
	logTail = 2048
)

// Process is a redis-server started by [Server] for one test, or a node of
// a deployment started by [Cluster] or [Sentinel]. It listens on 127.0.0.1
// on a port that stays the same across [Process.Stop] and [Process.Start],
// keeps no data on disk unless [ServerWith] asks for it, and is killed
// when the test ends.
//
// Its methods report failures with Fatalf on the test given to [Server],
// so call them from the test's own goroutine. They are safe to call
// concurrently with each other.
type Process struct {
	t    testing.TB
	bin  string
	dir  string
	port int

	// conf and args make a process other than a plain server; Server
	// leaves them empty. conf is a config file passed before the options,
	// which a sentinel needs because it rewrites its file. args are more
	// options, after the ones every process gets.
	conf string
	args []string
	// busPort is a cluster node's cluster bus port (cluster-port), 0 for
	// any other process. A cluster node gets its own free bus port rather
	// than Redis's default of port+10000, which may be taken or, for a port
	// from the kernel's ephemeral range, above 65535. Set it to pickPort
	// before start to have one picked.
	busPort int

	mu     sync.Mutex
	child  *child // nil while stopped
	paused bool
}

// Server starts a redis-server on a free 127.0.0.1 port, waits until it
// answers PING, and registers a cleanup that kills it by pid and removes its
// directory.
//
// When redis-server is not on PATH the test is skipped with the reason, unless
// the environment variable CI is true (as strconv.ParseBool reads it): then
// the test fails, because CI must never pass by skipping its real-Redis tests.
func Server(tb testing.TB) *Process {
	tb.Helper()
	return start(tb, &Process{t: tb, bin: lookPath(tb, "redis-server"), dir: tb.TempDir()})
}

// start starts p, which has its test, binary and directory set, on a free
// port as Server does, and registers the cleanup that kills it. The
// directory must come from TempDir before start is called, so that the
// cleanup runs before the directory is removed.
func start(tb testing.TB, p *Process) *Process {
	tb.Helper()
	tb.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if err := p.stopLocked(); err != nil {
			tb.Errorf("redistest: cleanup: %v", err)
		}
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.startLocked(true); err != nil {
		tb.Fatalf("redistest: start redis-server: %v", err)
	}
	return p
}

// debianPackage names the Debian package that installs each binary the
// package runs, for the skip message.
var debianPackage = map[string]string{
	"redis-server": "redis-server",
	"redis-cli":    "redis-tools",
}

// lookPath returns the path of the named binary (redis-server or
// redis-cli), or ends the test when there is none: Skip outside CI, Fatal
// in CI.
func lookPath(tb testing.TB, name string) string {
	tb.Helper()
	bin, err := exec.LookPath(name)
	if err == nil {
		return bin
	}
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		tb.Fatalf("redistest: %s is not on PATH and CI=true, so this test may not skip: %v", name, err)
	}
	tb.Skipf("redistest: skipping: %s is not on PATH (%v); install it (Debian: apt-get install %s) to run this test",
		name, err, debianPackage[name])
	return ""
}

// Addr returns the server's host:port. It stays the same across Stop and
// Start.
func (p *Process) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port))
}

// Pid returns the process id of the running redis-server, or 0 while it is
// stopped.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.child == nil {
		return 0
	}
	return p.child.pid()
}

// Client returns a go-redis client with default options connected to the
// server. It is closed when tb ends, before the server is killed if tb is
// the test given to [Server] or one of its subtests. The client keeps working
// across Restart: go-redis replaces dead connections.
func (p *Process) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	return newClient(tb, p.Addr())
}

// Stop kills the server with SIGKILL and waits until it has exited. Data is
// lost. Stop on a stopped server does nothing; a paused server is killed too.
func (p *Process) Stop() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.stopLocked(); err != nil {
		p.t.Fatalf("redistest: stop: %v", err)
	}
}

// Start starts a stopped server again on the same port, empty, and waits
// until it answers PING. It fails the test if the server is running or does
// not come up within a few seconds.
func (p *Process) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.child != nil {
		p.t.Fatalf("redistest: start: redis-server on %s is already running (pid %d)", p.Addr(), p.child.pid())
	}
	if err := p.startLocked(false); err != nil {
		p.t.Fatalf("redistest: start: %v", err)
	}
}

// Restart is Stop followed by Start: the server comes back on the same port
// with no data and a new pid.
func (p *Process) Restart() {
	p.t.Helper()
	p.Stop()
	p.Start()
}

// Pause stops the process with SIGSTOP. Connections stay open and new ones
// are accepted by the kernel, but no command is answered until
// [Process.Resume]: this is how a test sees a Redis that stalls. A paused
// server can still be stopped.
func (p *Process) Pause() {
	p.t.Helper()
	p.signal("pause", stopSignal, true)
}

// Resume continues a paused server with SIGCONT. Resume on a server that is
// not paused does nothing.
func (p *Process) Resume() {
	p.t.Helper()
	p.signal("resume", contSignal, false)
}

func (p *Process) signal(op string, sig os.Signal, paused bool) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.child == nil {
		p.t.Fatalf("redistest: %s: redis-server on %s is not running", op, p.Addr())
	}
	if p.paused == paused {
		return
	}
	if sig == nil {
		p.t.Fatalf("redistest: %s: not supported on this platform", op)
	}
	if err := p.child.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("redistest: %s: signal pid %d: %v", op, p.child.pid(), err)
	}
	p.paused = paused
}

// startLocked launches redis-server and waits until it is ready. With newPort
// it picks a fresh free port before each attempt; otherwise it reuses p.port,
// retrying while the old socket is still being torn down.
func (p *Process) startLocked(newPort bool) error {
	deadline := time.Now().Add(readyTimeout)
	var err error
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		if newPort {
			if p.port, err = freePort(); err != nil {
				return err
			}
			if p.busPort != 0 {
				if p.busPort, err = freePortBut(p.port); err != nil {
					return err
				}
			}
		}
		var c *child
		if c, err = p.spawn(deadline); err == nil {
			p.child, p.paused = c, false
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
		// Back off a little: whatever held the port may need a moment.
		time.Sleep(time.Duration(attempt) * 50 * time.Millisecond)
	}
	return err
}

// spawn starts one redis-server on p.port and waits until it answers, it
// exits, or the deadline passes.
func (p *Process) spawn(deadline time.Time) (*child, error) {
	logFile := p.logPath()
	var args []string
	if p.conf != "" {
		args = append(args, p.conf)
	}
	// No persistence and its own dir: nothing outlives the test, and nothing
	// can collide with another server's files.
	args = append(args,
		"--port", strconv.Itoa(p.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", p.dir,
		"--daemonize", "no",
		"--logfile", logFile,
	)
	if p.busPort != 0 {
		args = append(args, "--cluster-port", strconv.Itoa(p.busPort))
	}
	args = append(args, p.args...)
	// Background: the process outlives any one call; Stop and the cleanup
	// kill it.
	cmd := exec.CommandContext(context.Background(), p.bin, args...) //nolint:gosec // G204: redis-server from PATH, args built above
	cmd.Dir = p.dir
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("exec %s: %w", p.bin, err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()

	for {
		pid, err := probe(p.Addr())
		switch {
		case err == nil && pid == c.pid():
			return c, nil
		case err == nil:
			// Someone else's Redis answers on our port: ours cannot have bound it.
			err = fmt.Errorf("port %d is answered by another redis-server (pid %d)", p.port, pid)
			return nil, errors.Join(err, c.kill())
		}
		select {
		case <-c.done:
			exitErr := c.err
			if exitErr == nil {
				exitErr = errors.New("exit status 0")
			}
			return nil, fmt.Errorf("redis-server on port %d exited at start: %w; log:\n%s", p.port, exitErr, readTail(logFile))
		case <-time.After(probeInterval):
		}
		if time.Now().After(deadline) {
			err = fmt.Errorf("redis-server on port %d not ready after %s (last probe: %w); log:\n%s",
				p.port, readyTimeout, err, readTail(logFile))
			return nil, errors.Join(err, c.kill())
		}
	}
}

// stopLocked kills the running server, if any, and waits for it.
func (p *Process) stopLocked() error {
	if p.child == nil {
		return nil
	}
	c := p.child
	p.child, p.paused = nil, false
	return c.kill()
}

// child is one redis-server process.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // cmd.Wait's result; read it only after done is closed
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// kill sends SIGKILL, which also ends a process stopped by SIGSTOP, and waits
// until the process has been reaped.
func (c *child) kill() error {
	if err := c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill redis-server (pid %d): %w", c.pid(), err)
	}
	select {
	case <-c.done:
		return nil
	case <-time.After(killTimeout):
		return fmt.Errorf("redis-server (pid %d) not reaped %s after SIGKILL", c.pid(), killTimeout)
	}
}

// freePort asks the kernel for a free 127.0.0.1 port. Another process may
// take it before redis-server binds it; startLocked retries when that happens.
func freePort() (int, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.Join(fmt.Errorf("find a free port: unexpected address %v", ln.Addr()), ln.Close())
	}
	if err := ln.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return addr.Port, nil
}

// pickPort as a Process's busPort asks startLocked to pick a free one.
const pickPort = -1

// freePortBut returns a free 127.0.0.1 port other than taken, which the
// kernel may hand out again once its listener is closed.
func freePortBut(taken int) (int, error) {
	for {
		port, err := freePort()
		if err != nil || port != taken {
			return port, err
		}
	}
}

// probe sends PING and INFO server to addr over a raw connection and returns
// the pid the server reports, so that a caller can tell its own server from
// another one on the same port.
func probe(addr string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return 0, err
	}
	if _, err := io.WriteString(conn, "PING\r\nINFO server\r\n"); err != nil {
		return 0, err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if line != "+PONG\r\n" {
		return 0, fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	line, err = r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	size, ok := strings.CutPrefix(strings.TrimSpace(line), "$")
	if !ok {
		return 0, fmt.Errorf("INFO answered %q", strings.TrimSpace(line))
	}
	n, err := strconv.Atoi(size)
	if err != nil {
		return 0, fmt.Errorf("INFO answered %q: %w", strings.TrimSpace(line), err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	for l := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(l, "process_id:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("INFO server has no process_id")
}

// logPath is the file redis-server logs to.
func (p *Process) logPath() string { return filepath.Join(p.dir, "redis.log") }

// readTail returns the end of redis-server's log for a failure message.
func readTail(path string) string {
	b, err := os.ReadFile(path) //nolint:gosec // G304: the path is our own log file in the test's temp dir
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > logTail {
		b = b[len(b)-logTail:]
	}
	return string(b)
}
