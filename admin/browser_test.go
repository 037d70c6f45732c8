package admin_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/admin"
	"github.com/turnstilehq/turnstile/lock"
)

// chromium finds Debian's chromium. Under CI=true a missing browser fails
// the test; elsewhere it skips and says why.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (.ci/run installs Debian's chromium)")
	}
	t.Skip("chromium is not installed; apt-get install chromium to run the browser test")
	return ""
}

// headless runs chromium without a sandbox or any network of its own,
// with a fresh profile, and returns its stdout.
func headless(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	args = append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(),
	}, args...)
	cmd := exec.CommandContext(ctx, bin, args...) //nolint:gosec // G204: bin is the chromium found on PATH, args are ours.
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "chromium: %s", stderr.String())
	return stdout.String()
}

// The locks page, loaded in a real browser, lists a lock the test holds.
func TestBrowser_LocksPage(t *testing.T) {
	t.Parallel()
	bin := chromium(t)
	f := newFixture(t, admin.Config{}, nil)
	owned, err := f.locker.With(lock.Options{TTL: time.Minute, Owner: "payment:confirm/t-browser"})
	require.NoError(t, err)
	_, err = owned.Acquire(t.Context(), lock.Key("order", "browser-1"))
	require.NoError(t, err)
	url := f.srv.URL + "/locks/"

	dom := headless(t, bin, "--dump-dom", url)
	require.Contains(t, dom, "order:browser-1", "the page lists the held lock")
	require.Contains(t, dom, "t-browser")

	// The screenshot outlives the test, as an artifact to look at.
	dir, err := os.MkdirTemp("", "turnstile-browser-")
	require.NoError(t, err)
	shot := filepath.Join(dir, "locks.png")
	headless(t, bin, "--window-size=1100,500", "--screenshot="+shot, url)
	b, err := os.ReadFile(shot) //nolint:gosec // G304: the file the browser just wrote in our temp dir.
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(b, []byte("\x89PNG")), "not a PNG")
	t.Logf("screenshot of the locks page: %s", shot)
}

// The asynq dashboard, loaded in a real browser, shows the queues.
func TestBrowser_Dashboard(t *testing.T) {
	t.Parallel()
	bin := chromium(t)
	f := newFixture(t, admin.Config{}, nil)
	_, err := asynq.NewClientFromRedisClient(f.rdb).Enqueue(asynq.NewTask("test:note", []byte(`{"text":"x"}`)), asynq.Queue("payments-browser"))
	require.NoError(t, err)
	url := f.srv.URL + "/dashboard/"
	// The dashboard is a script that fetches the queues after load: give it
	// virtual time to render them.
	dom := headless(t, bin, "--virtual-time-budget=15000", "--dump-dom", url)
	require.Contains(t, dom, "payments-browser", "the dashboard lists the queues")

	dir, err := os.MkdirTemp("", "turnstile-browser-")
	require.NoError(t, err)
	shot := filepath.Join(dir, "dashboard.png")
	headless(t, bin, "--virtual-time-budget=15000", "--window-size=1280,800", "--screenshot="+shot, url)
	t.Logf("screenshot of the dashboard: %s", shot)
}
