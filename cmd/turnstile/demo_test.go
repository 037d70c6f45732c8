package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func runDemoJSON(t *testing.T, args ...string) (int, demoSummary) {
	t.Helper()
	return demoResult(t, startDemo(t, args...))
}

// startDemo runs "turnstile demo -json" with args in a goroutine, for
// tests that act on Redis during the run; demoResult waits for it.
func startDemo(t *testing.T, args ...string) <-chan demoRun {
	t.Helper()
	done := make(chan demoRun, 1)
	go func() {
		var r demoRun
		c := &cli{ctx: t.Context(), stdout: &r.stdout, stderr: &r.stderr, getenv: func(string) string { return "" }}
		r.code = c.run(append([]string{"demo", "-json", "-admin-addr="}, args...))
		done <- r
	}()
	return done
}

type demoRun struct {
	code           int
	stdout, stderr bytes.Buffer
}

func demoResult(t *testing.T, done <-chan demoRun) (int, demoSummary) {
	t.Helper()
	r := <-done
	var s demoSummary
	require.NoError(t, json.Unmarshal(r.stdout.Bytes(), &s), "stdout:\n%s\nstderr:\n%s", &r.stdout, &r.stderr)
	return r.code, s
}

func TestDemo_InvariantsHold(t *testing.T) {
	t.Parallel()
	code, s := runDemoJSON(t, "-orders", "120", "-seed", "3")
	require.Equal(t, exitOK, code)
	require.True(t, s.OK, "%+v", s.Violations)
	require.Empty(t, s.Violations)
	require.Positive(t, s.Orders.Reserved)
	require.Positive(t, s.Orders.SoldOut, "the workload must be scarce")
	require.Positive(t, s.Jobs["payment:confirm"].OK)
	require.Positive(t, s.Locks.Acquisitions)
	require.Positive(t, s.Locks.Contended, "the workload must contend")
}

// The same workload without locks breaks invariants, and the checker says
// so: the proof that the locks matter and that the checker can fail.
func TestDemo_WithoutLocksViolates(t *testing.T) {
	t.Parallel()
	code, s := runDemoJSON(t, "-orders", "300", "-no-lock")
	require.Equal(t, exitError, code)
	require.False(t, s.OK)
	require.NotEmpty(t, s.Violations)
	require.Zero(t, s.Locks.Acquisitions, "-no-lock took a lock")
}
