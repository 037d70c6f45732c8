// Package netfault puts a TCP proxy with injectable faults between a
// client and a server on loopback, for tests that cut, slow or swallow a
// worker's connection to Redis. It runs Shopify's toxiproxy in process:
//
//	p := netfault.Start(t, srv.Addr())
//	rdb := redis.NewClient(&redis.Options{Addr: p.Addr()})
//	p.Latency(t, 200*time.Millisecond) // every reply 200 ms late
//	p.Blackhole(t)                     // bytes swallowed, the connection left open
//	p.Clear(t)                         // back to a plain proxy
package netfault

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// A Proxy forwards a loopback port to its upstream, with the faults its
// methods add to every connection, open or new, until Clear.
type Proxy struct {
	p *toxiproxy.Proxy
}

// Start proxies a free 127.0.0.1 port to upstream until the test ends.
func Start(tb testing.TB, upstream string) *Proxy {
	tb.Helper()
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(server, tb.Name(), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		tb.Fatalf("netfault: proxy to %s: %v", upstream, err)
	}
	tb.Cleanup(p.Stop)
	return &Proxy{p: p}
}

// Addr is where clients connect instead of the upstream.
func (p *Proxy) Addr() string { return p.p.Listen }

// Latency delays every byte from the upstream by d: a slow network, or a
// server stalling without dropping anything.
func (p *Proxy) Latency(tb testing.TB, d time.Duration) {
	tb.Helper()
	p.add(tb, "latency", "downstream", map[string]any{"latency": d.Milliseconds()})
}

// Reset closes every connection with a TCP RST once it has been open for
// after (at once for 0), as a crashed peer or a middlebox would; new
// connections are reset the same way until Clear.
func (p *Proxy) Reset(tb testing.TB, after time.Duration) {
	tb.Helper()
	p.add(tb, "reset_peer", "upstream", map[string]any{"timeout": after.Milliseconds()})
}

// Blackhole swallows every byte to the upstream and keeps the connection
// open: the half-open connection a client notices only by its own
// timeouts.
func (p *Proxy) Blackhole(tb testing.TB) {
	tb.Helper()
	p.add(tb, "timeout", "upstream", map[string]any{"timeout": 0})
}

// SlowClose delays the close of every connection by d after the upstream
// closed it.
func (p *Proxy) SlowClose(tb testing.TB, d time.Duration) {
	tb.Helper()
	p.add(tb, "slow_close", "downstream", map[string]any{"delay": d.Milliseconds()})
}

// Clear removes every fault: new bytes flow again on connections that
// are still open.
func (p *Proxy) Clear(tb testing.TB) {
	tb.Helper()
	p.p.Toxics.ResetToxics(context.Background())
}

func (p *Proxy) add(tb testing.TB, kind, stream string, attrs map[string]any) {
	tb.Helper()
	b, err := json.Marshal(map[string]any{"name": kind, "type": kind, "stream": stream, "attributes": attrs})
	if err != nil {
		tb.Fatalf("netfault: %s: %v", kind, err)
	}
	if _, err := p.p.Toxics.AddToxicJson(strings.NewReader(string(b))); err != nil {
		tb.Fatalf("netfault: add %s to %s: %v", kind, p.Addr(), err)
	}
}
