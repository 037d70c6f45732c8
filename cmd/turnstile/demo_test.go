package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func runDemoJSON(t *testing.T, args ...string) (int, demoSummary) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	c := &cli{ctx: t.Context(), stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
	code := c.run(append([]string{"demo", "-json", "-admin-addr="}, args...))
	var s demoSummary
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &s), "stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	return code, s
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
