// Package netfault puts a TCP proxy with injectable faults between a
// client and a server on loopback, for tests that cut, slow or swallow a
// worker's connection to Redis. It runs Shopify's toxiproxy in process:
//
//	p := netfault.Start(t, srv.Addr())
//	rdb := redis.NewClient(&redis.Options{Addr: p.Addr()})
//	err := p.Latency(200 * time.Millisecond) // every reply 200 ms late
//	err = p.Blackhole()                      // bytes swallowed, the connection left open
//	p.Clear(ctx)                             // back to a plain proxy
//
// The fault methods return errors rather than failing a test, so that a
// fault schedule can run them from its own goroutine, where t.Fatal must
// not be called.
package netfault

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// A Proxy forwards a loopback port to its upstream, with the faults its
// methods add to every connection, open or new, until Clear. A Proxy is
// safe for concurrent use.
type Proxy struct {
	p *toxiproxy.Proxy
}

// Start proxies a free 127.0.0.1 port to upstream until the test ends. It
// fails the test when the port cannot be listened on, so call it from the
// test's goroutine.
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
func (p *Proxy) Latency(d time.Duration) error {
	return p.add("latency", "downstream", map[string]any{"latency": d.Milliseconds()})
}

// Reset closes every connection once it has carried data for after (at
// once for 0), as a crashed peer or a middlebox would; new connections are
// cut the same way until Clear. A connection opened while the fault is on
// is cut with a TCP RST; toxiproxy sets SO_LINGER 0 only on connections
// it accepts with the fault in place, so one already open may see a FIN
// instead, which a client notices as fast.
func (p *Proxy) Reset(after time.Duration) error {
	return p.add("reset_peer", "upstream", map[string]any{"timeout": after.Milliseconds()})
}

// Blackhole swallows every byte to the upstream and keeps the connection
// open: the half-open connection a client notices only by its own
// timeouts. The bytes are dropped, not held: Clear closes the connections
// that were swallowed, and new ones work again.
func (p *Proxy) Blackhole() error {
	return p.add("timeout", "upstream", map[string]any{"timeout": 0})
}

// SlowClose delays by d the close of every connection, in both
// directions: the client learns late that the server closed it, and the
// server learns late that the client did (a subscriber the client has
// given up on still counts as one).
func (p *Proxy) SlowClose(d time.Duration) error {
	for _, stream := range []string{"downstream", "upstream"} {
		if err := p.add("slow_close", stream, map[string]any{"delay": d.Milliseconds()}); err != nil {
			return err
		}
	}
	return nil
}

// Clear removes every fault: new bytes flow again on connections that
// are still open. ctx only carries toxiproxy's logger: a cancelled ctx
// clears all the same.
func (p *Proxy) Clear(ctx context.Context) {
	p.p.Toxics.ResetToxics(ctx)
}

// add adds one toxic, named by its type and stream so that one of each
// can be on at a time.
func (p *Proxy) add(kind, stream string, attrs map[string]any) error {
	b, err := json.Marshal(map[string]any{"name": kind + "_" + stream, "type": kind, "stream": stream, "attributes": attrs})
	if err != nil {
		return fmt.Errorf("netfault: %s: %w", kind, err)
	}
	if _, err := p.p.Toxics.AddToxicJson(strings.NewReader(string(b))); err != nil {
		return fmt.Errorf("netfault: add %s to %s: %w", kind, p.Addr(), err)
	}
	return nil
}
