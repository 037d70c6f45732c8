package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/bench/internal/redisserver"
)

func TestCheckSale(t *testing.T) {
	t.Parallel()
	lost := sale{start: 100, sold: 100, final: 3, lost: 3}

	t.Run("LockedModeThatLosesFailsTheRun", func(t *testing.T) {
		t.Parallel()
		b := &bench{cfg: config{modes: []mode{modeGuard}}, fig: figures{}}
		if got := b.checkSale(modeGuard, 0, lost); !strings.Contains(got, "LOST 3") {
			t.Errorf("verdict %q, want it to say LOST 3", got)
		}
		var out bytes.Buffer
		if err := b.report(&out); err == nil {
			t.Error("report: no error after a locked mode lost updates")
		}
		if !strings.Contains(out.String(), "FAIL: flash sale, guard, round 1: final stock 3, want 100 - 100 sold = 0") {
			t.Errorf("report has no FAIL line:\n%s", out.String())
		}
	})
	t.Run("BareMayLose", func(t *testing.T) {
		t.Parallel()
		b := &bench{cfg: config{modes: []mode{modeBare}}, fig: figures{}}
		b.checkSale(modeBare, 0, lost)
		if err := b.report(&bytes.Buffer{}); err != nil {
			t.Errorf("report: %v, want nil: bare asynq is expected to lose updates", err)
		}
	})
	t.Run("ExactPasses", func(t *testing.T) {
		t.Parallel()
		b := &bench{cfg: config{modes: []mode{modeRedsync}}, fig: figures{}}
		if got := b.checkSale(modeRedsync, 0, sale{start: 100, sold: 100, exact: true}); got != "exact" {
			t.Errorf("verdict %q, want exact", got)
		}
		if err := b.report(&bytes.Buffer{}); err != nil {
			t.Errorf("report: %v", err)
		}
	})
}

// TestFlash_Redis runs the flash sale against a real redis-server: the
// guard sells every unit exactly once, and bare asynq, with 32 tasks
// reading and writing the stock at once, loses updates, which is what
// the exactness check must be able to see.
func TestFlash_Redis(t *testing.T) {
	t.Parallel()
	srv := redisserver.ForTest(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 128})
	t.Cleanup(func() { _ = rdb.Close() })
	b := &bench{cfg: config{concurrency: 32, redisServer: "redis-server"}, srv: srv, rdb: rdb, fig: figures{}}

	const n = 300
	flash := func(m mode) sale {
		t.Helper()
		var s sale
		if err := b.flash(t.Context(), m, n, func(got sale) { s = got }); err != nil {
			t.Fatal(err)
		}
		if err := b.drain(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := flash(modeGuard)
	if !s.exact || s.sold != n || s.final != 0 {
		t.Errorf("guard: sold %d, final stock %d, lost %d; want %d sold, 0 left, none lost", s.sold, s.final, s.lost, n)
	}
	s = flash(modeBare)
	if s.exact || s.lost <= 0 {
		t.Errorf("bare: sold %d, final stock %d, lost %d; want lost updates", s.sold, s.final, s.lost)
	}
}

func TestPerTask(t *testing.T) {
	t.Parallel()
	before := parseCommandCalls("# Stats\r\ntotal_reads_processed:100\r\ntotal_writes_processed:90\r\n" +
		"# Commandstats\r\ncmdstat_evalsha:calls=10,usec=300,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_info:calls=1,usec=50,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n")
	after := parseCommandCalls("# Stats\r\ntotal_reads_processed:400\r\ntotal_writes_processed:390\r\n" +
		"# Commandstats\r\ncmdstat_evalsha:calls=410,usec=12300,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_incr:calls=300,usec=300,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_info:calls=2,usec=100,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n")
	got := perTask(before, after, 100)
	// info ran once in 100 tasks: left out as a reading's own, not the mode's.
	want := "7.00 commands, evalsha 4.00, (reads) 3.00, (writes) 3.00, incr 3.00"
	if got != want {
		t.Errorf("perTask = %q, want %q", got, want)
	}
}
