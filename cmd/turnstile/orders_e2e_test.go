package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// walkthroughHeading starts the README section whose sh blocks
// TestOrders_TheREADMEWalkthrough runs.
const walkthroughHeading = "### The HTTP API: the order flow, and clients in other languages"

// readmeBlocks returns the ```sh blocks of the README section under
// heading, in order; the section's ```bash block, which starts Redis and
// the worker, is what the test does itself.
func readmeBlocks(t *testing.T, heading string) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(b), heading+"\n")
	require.True(t, ok, "README has no %q", heading)
	if end := strings.Index(section, "\n### "); end >= 0 {
		section = section[:end]
	}
	var blocks []string
	for {
		_, rest, ok := strings.Cut(section, "\n```sh\n")
		if !ok {
			return blocks
		}
		block, after, ok := strings.Cut(rest, "\n```\n")
		require.True(t, ok, "an unclosed sh block")
		blocks, section = append(blocks, block), after
	}
}

// shown is what a README block shows it prints: its comment lines
// ("# ..."), without the "# ".
func shown(block string) string {
	var b strings.Builder
	for line := range strings.Lines(block) {
		if out, ok := strings.CutPrefix(line, "# "); ok {
			b.WriteString(strings.TrimSuffix(out, "\n") + "\n")
		}
	}
	return b.String()
}

type walkthroughOrder struct {
	ID       string       `json:"id"`
	Number   string       `json:"number"`
	State    ledger.State `json:"state"`
	Amount   int64        `json:"amount"`
	Paid     int64        `json:"paid"`
	Refunded int64        `json:"refunded"`
	Refunds  []string     `json:"refunds"`
	// Notifications are the order's, with whether each went out.
	Notifications []struct {
		Kind      string `json:"kind"`
		Delivered bool   `json:"delivered"`
	} `json:"notifications"`
}

// delivered reports the kinds of the order's notifications, if all went out.
func (o walkthroughOrder) delivered() []string {
	var kinds []string
	for _, n := range o.Notifications {
		if !n.Delivered {
			return nil
		}
		kinds = append(kinds, n.Kind)
	}
	return kinds
}

// The README's curl walkthrough of the order flow, run as it is against a
// worker on a real redis-server: stock a ticket type, reserve an order,
// confirm its payment and refund it through the enqueue API, read it back.
func TestOrders_TheREADMEWalkthrough(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("the README walkthrough needs curl: install it (Debian package curl)")
		}
		t.Skip("no curl on PATH")
	}
	blocks := readmeBlocks(t, walkthroughHeading)
	srv := redistest.Server(t)
	addr := freeAddr(t)
	const token = "walkthrough-admin-token-0123"
	env := map[string]string{
		"TURNSTILE_REDIS_URL": "redis://" + srv.Addr(), "TURNSTILE_POLL_INTERVAL": "10ms",
		"TURNSTILE_ADMIN_ADDR": addr, "TURNSTILE_ADMIN_TOKEN": token,
	}
	logs, stop := startShopWorker(t, env)
	base := "http://" + addr
	require.Eventually(t, func() bool {
		code, _ := httpDo(t, http.MethodGet, base+"/readyz", "", "")
		return code == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond, "the worker did not start; log:\n%s", logs)

	// run runs a README block as a user's shell would, and returns what
	// it printed.
	run := func(block string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), "bash", "-euo", "pipefail", "-c", block) //nolint:gosec // G204: running the README's own blocks is the test
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "ADMIN=" + base, "AUTH=Authorization: Bearer " + token}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		require.NoError(t, cmd.Run(), "%s\nstderr: %s\nworker log:\n%s", block, &stderr, logs)
		require.NotContains(t, stdout.String(), `"error"`, block)
		return stdout.String()
	}
	order := func() walkthroughOrder {
		t.Helper()
		code, body := httpDo(t, http.MethodGet, base+"/api/v1/orders/o-1001", token, "")
		require.Equal(t, http.StatusOK, code, body)
		var o walkthroughOrder
		require.NoError(t, json.Unmarshal([]byte(body), &o), body)
		return o
	}
	// until waits for the tasks a block enqueued to have run.
	until := func(state ledger.State, kinds ...string) {
		t.Helper()
		require.Eventually(t, func() bool {
			o := order()
			return o.State == state && slices.Equal(o.delivered(), kinds)
		}, 30*time.Second, 50*time.Millisecond, "order not %s with %v delivered; log:\n%s", state, kinds, logs)
	}
	// The task IDs an Idempotency-Key gives: derived from the task type
	// and the key, so the README can show them.
	const confirmID, refundID = "idem-83ae25646a00e81ee5ab68ee", "idem-cc491601d8f7952a3c7cfcbc"
	steps := []func(out string){
		func(out string) { require.Contains(t, out, `"available":100`) },
		func(out string) {
			var o walkthroughOrder
			require.NoError(t, json.Unmarshal([]byte(out), &o), out)
			require.Equal(t, "o-1001", o.ID)
			require.Equal(t, ledger.StateReserved, o.State)
			require.Equal(t, int64(5000), o.Amount)
			require.Equal(t, "TS-arena-000001", o.Number)
		},
		func(out string) {
			require.JSONEq(t, `{"task_id":"`+confirmID+`","queue":"critical"}`, out)
			until(ledger.StatePaid, "confirmed")
		},
		func(out string) {
			// The webhook again, with its key: 200, the same task, and
			// nothing enqueued (the task ran and is kept).
			answer, status, ok := strings.Cut(out, "\n")
			require.True(t, ok, out)
			require.JSONEq(t, `{"task_id":"`+confirmID+`","queue":"critical","duplicate":true}`, answer)
			require.Equal(t, "200\n", status)
			code, body := httpDo(t, http.MethodGet, base+"/api/v1/tasks/critical/"+confirmID, token, "")
			require.Equal(t, http.StatusOK, code, body)
			require.Contains(t, body, `"state":"completed"`)
			inspect := asynq.NewInspector(asynq.RedisClientOpt{Addr: srv.Addr()})
			defer func() { require.NoError(t, inspect.Close()) }()
			q, err := inspect.GetQueueInfo("critical")
			require.NoError(t, err)
			require.Equal(t, 1, q.Completed, "one task was enqueued")
			require.Zero(t, q.Pending+q.Active+q.Scheduled+q.Retry+q.Archived, "one task was enqueued")
		},
		func(out string) {
			require.JSONEq(t, `{"task_id":"`+refundID+`","queue":"default"}`, out)
			until(ledger.StateRefunded, "confirmed", "refunded")
		},
		func(out string) {
			var o walkthroughOrder
			require.NoError(t, json.Unmarshal([]byte(out), &o), out)
			require.Equal(t, ledger.StateRefunded, o.State)
			require.Equal(t, int64(5000), o.Paid)
			require.Equal(t, int64(5000), o.Refunded)
			require.Equal(t, []string{"r-1"}, o.Refunds)
			require.Equal(t, []string{"confirmed", "refunded"}, o.delivered())
		},
	}
	require.Len(t, blocks, len(steps), "the README's walkthrough has a block this test does not check")
	for i, block := range blocks {
		out := run(block)
		// What a block shows it prints is what it prints: all of it, or,
		// where it elides ("..."), the parts it shows, in order.
		switch want := shown(block); {
		case want == "":
		case !strings.Contains(want, "..."):
			require.Equal(t, want, out, "the README shows another answer than the server gives")
		default:
			var joined strings.Builder
			for line := range strings.Lines(want) {
				joined.WriteString(strings.TrimSpace(line))
			}
			rest := out
			for part := range strings.SplitSeq(joined.String(), "...") {
				at := strings.Index(rest, part)
				require.GreaterOrEqual(t, at, 0, "the README shows %s where the server answers\n%s", part, out)
				rest = rest[at+len(part):]
			}
		}
		steps[i](out)
	}

	code, body := httpDo(t, http.MethodGet, base+"/api/v1/locks", token, "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `"locks":[]`, "no lock left")
	stop()
}
