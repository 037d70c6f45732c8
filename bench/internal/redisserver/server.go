// Package redisserver starts a throwaway redis-server for a benchmark on a
// free 127.0.0.1 port, without persistence, and kills it by pid.
package redisserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// readyTimeout bounds the wait for a spawned redis-server to answer.
	readyTimeout = 10 * time.Second
	// spawnAttempts bounds how often Start retries when a server
	// exits at start, e.g. because another process took its port first.
	spawnAttempts = 3
	// killTimeout bounds the wait for the server to be reaped after SIGKILL.
	killTimeout = 10 * time.Second
)

// Server is a redis-server started on a free 127.0.0.1 port, with no
// persistence, and killed by pid in Stop.
type Server struct {
	cmd    *exec.Cmd
	addr   string
	dir    string
	exited chan struct{} // closed once the process has been reaped
	// admin reads INFO. It carries no hook, so its commands are never
	// counted against what a benchmark measures.
	admin *redis.Client
}

// Start starts bin and waits until it answers with its own pid.
func Start(ctx context.Context, bin string) (*Server, error) {
	var errs []error
	for range spawnAttempts {
		s, err := spawn(ctx, bin)
		if err == nil {
			return s, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("start %s: %w", bin, errors.Join(errs...))
}

func spawn(ctx context.Context, bin string) (*Server, error) {
	port, err := FreePort(ctx)
	if err != nil {
		return nil, err
	}
	return spawnOn(ctx, bin, port, nil)
}

// spawnOn starts bin on port in a temporary dir of its own, which keeps
// any file redis-server writes out of the work tree, with the arguments
// extra returns for that dir, and waits until it answers.
func spawnOn(ctx context.Context, bin string, port int, extra func(dir string) []string) (*Server, error) {
	dir, err := os.MkdirTemp("", "bench-redis-")
	if err != nil {
		return nil, err
	}
	args := []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log"),
	}
	if extra != nil {
		args = append(args, extra(dir)...)
	}
	//nolint:gosec,noctx // G204: bin is the user's -redis-server flag; no ctx: the server is killed by pid in Stop, not by a context.
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, errors.Join(err, os.RemoveAll(dir))
	}
	s := &Server{
		cmd:    cmd,
		addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		dir:    dir,
		exited: make(chan struct{}),
	}
	go func() {
		_ = cmd.Wait() // the exit status of a killed server tells nothing
		close(s.exited)
	}()
	s.admin = redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1})
	if err := s.awaitReady(ctx); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	return s, nil
}

// awaitReady polls until the server on s.addr reports our child's pid, so
// that another server that happens to answer on the port is never used.
func (s *Server) awaitReady(ctx context.Context) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		info, err := s.admin.Info(ctx, "server").Result()
		if err == nil {
			pid, _ := strconv.Atoi(infoField(info, "process_id"))
			if pid == s.cmd.Process.Pid {
				return nil
			}
			return fmt.Errorf("port %s is answered by another redis-server (pid %d)", s.addr, pid)
		}
		select {
		case <-s.exited:
			return fmt.Errorf("redis-server on %s exited at start; log:\n%s", s.addr, s.logTail())
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s not ready after %s: %w", s.addr, readyTimeout, err)
		}
	}
}

// Stop kills the server by pid, waits until it is reaped and removes its
// directory.
func (s *Server) Stop() error {
	err := s.admin.Close()
	if kerr := s.cmd.Process.Kill(); kerr != nil && !errors.Is(kerr, os.ErrProcessDone) {
		err = errors.Join(err, fmt.Errorf("kill redis-server (pid %d): %w", s.cmd.Process.Pid, kerr))
	}
	select {
	case <-s.exited:
	case <-time.After(killTimeout):
		err = errors.Join(err, fmt.Errorf("redis-server (pid %d) not reaped after SIGKILL", s.cmd.Process.Pid))
	}
	return errors.Join(err, os.RemoveAll(s.dir))
}

// CPU returns the CPU time the server has used so far, user plus system,
// across all its threads.
func (s *Server) CPU(ctx context.Context) (time.Duration, error) {
	info, err := s.admin.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, fmt.Errorf("INFO cpu: %w", err)
	}
	var total float64
	for _, field := range []string{"used_cpu_sys", "used_cpu_user"} {
		v, err := strconv.ParseFloat(infoField(info, field), 64)
		if err != nil {
			return 0, fmt.Errorf("INFO cpu: %s: %w", field, err)
		}
		total += v
	}
	return time.Duration(total * float64(time.Second)), nil
}

// infoField returns the value of "name:value" in an INFO reply, or "".
func infoField(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (s *Server) logTail() string { return Tail(filepath.Join(s.dir, "redis.log")) }

// Tail returns the last 2 KiB of the log file at path, for an error
// message about the process that wrote it.
func Tail(path string) string {
	b, err := os.ReadFile(path) //nolint:gosec // G304: a log file the caller's process wrote.
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	const tail = 2048
	if len(b) > tail {
		b = b[len(b)-tail:]
	}
	return string(b)
}

// FreePort asks the kernel for a free 127.0.0.1 port. Another process may
// take it before the caller binds it: redis-server's Start retries then.
func FreePort(ctx context.Context) (int, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return port, nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

// Pid is the server's process ID.
func (s *Server) Pid() int { return s.cmd.Process.Pid }
