package autopipe_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/turnstilehq/turnstile/internal/autopipe"
	"github.com/turnstilehq/turnstile/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo returns its key and argument, so a caller can tell its own reply.
var echo = redis.NewScript(`return KEYS[1] .. '=' .. ARGV[1]`)

// incr counts the calls that really ran on a key.
var incr = redis.NewScript(`return redis.call('INCR', KEYS[1])`)

type backend struct {
	name string
	addr func(t *testing.T) string
}

var backends = []backend{
	{"Miniredis", func(t *testing.T) string { t.Helper(); return redistest.Mini(t).Addr() }},
	{"Redis", func(t *testing.T) string { t.Helper(); return redistest.Server(t).Addr() }},
}

// writes counts the requests a client sends: a command or a pipeline is
// one write.
type writes struct{ n atomic.Int64 }

func (w *writes) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{c, &w.n}, nil
	}
}
func (*writes) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (*writes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(b)
}

func client(t *testing.T, addr string, hooks ...redis.Hook) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
	for _, h := range hooks {
		c.AddHook(h)
	}
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	require.NoError(t, c.Ping(t.Context()).Err())
	return c
}

func TestPipe_BatchesUnderLoadAndAnswersEachCaller(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			w := &writes{}
			c := client(t, be.addr(t), w)
			p := autopipe.New(c)
			require.NoError(t, p.Run(t.Context(), echo, []string{"warm"}, "up").Err())
			w.n.Store(0)

			const goroutines, calls = 64, 100
			var wg sync.WaitGroup
			errs := make(chan error, goroutines)
			for g := range goroutines {
				wg.Go(func() {
					key := "k" + strconv.Itoa(g)
					for i := range calls {
						got, err := p.Run(t.Context(), echo, []string{key}, i).Text()
						if want := fmt.Sprintf("%s=%d", key, i); err != nil || got != want {
							errs <- fmt.Errorf("got %q, %w; want %q", got, err, want)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			// 64 callers on 2 cores queue behind each other all the time.
			require.Less(t, w.n.Load(), int64(goroutines*calls/2), "calls were not batched")
		})
	}
}

func TestPipe_LoneCallerSendsEachCallItself(t *testing.T) {
	w := &writes{}
	c := client(t, redistest.Mini(t).Addr(), w)
	p := autopipe.New(c)
	require.NoError(t, p.Run(t.Context(), incr, []string{"n"}).Err()) // loads the script
	w.n.Store(0)
	for i := range 50 {
		n, err := p.Run(t.Context(), incr, []string{"n"}).Int()
		require.NoError(t, err)
		require.Equal(t, i+2, n)
	}
	require.EqualValues(t, 50, w.n.Load(), "one write per call, no more")
}

// noscript counts the batched calls that found their script gone.
type noscript struct{ n atomic.Int64 }

func (*noscript) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (*noscript) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (s *noscript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
				s.n.Add(1)
			}
		}
		return err
	}
}

func TestPipe_ReloadsScriptsRedisForgot(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			addr := be.addr(t)
			admin := client(t, addr)
			require.NoError(t, incr.Load(t.Context(), admin).Err())
			forgot := &noscript{}
			g := &gate{open: make(chan struct{}), arrived: make(chan struct{}, 2), after: true}
			c := client(t, addr, forgot)
			c.AddHook(g)
			p := autopipe.New(c)

			// Two flights ran and wait at the gate, a batch queues behind them,
			// and meanwhile Redis forgets the script.
			var wg sync.WaitGroup
			var failed atomic.Int64
			run := func() {
				if err := p.Run(context.Background(), incr, []string{"n"}).Err(); err != nil {
					t.Log(err)
					failed.Add(1)
				}
			}
			for range 2 {
				wg.Go(run)
			}
			<-g.arrived
			<-g.arrived
			for range 8 {
				wg.Go(run)
			}
			time.Sleep(20 * time.Millisecond) // let them queue
			require.NoError(t, admin.ScriptFlush(t.Context()).Err())
			close(g.open)
			wg.Wait()

			require.Zero(t, failed.Load())
			n, err := admin.Get(t.Context(), "n").Int()
			require.NoError(t, err)
			require.Equal(t, 10, n)
			require.Positive(t, forgot.n.Load(), "no batch met the flushed script; the test shows nothing")
		})
	}
}

// gate holds every script sent alone until opened, before sending it or,
// with after, once it has run. Other commands, such as those that set up a
// new connection, pass.
type gate struct {
	open    chan struct{}
	arrived chan struct{}
	after   bool
}

// arrive tells the test of a held command; those beyond the first few,
// once the gate is open, need not be told.
func (g *gate) arrive() {
	select {
	case g.arrived <- struct{}{}:
	default:
	}
}

func (*gate) DialHook(next redis.DialHook) redis.DialHook { return next }
func (g *gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "evalsha" {
			return next(ctx, cmd)
		}
		if g.after {
			err := next(ctx, cmd)
			g.arrive()
			<-g.open
			return err
		}
		g.arrive()
		<-g.open
		return next(ctx, cmd)
	}
}

func (g *gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !g.after {
			<-g.open
		}
		return next(ctx, cmds)
	}
}

func TestPipe_CallerCancelledWhileQueuedLeavesUnsent(t *testing.T) {
	addr := redistest.Mini(t).Addr()
	warm := client(t, addr)
	require.NoError(t, incr.Load(t.Context(), warm).Err())
	g := &gate{open: make(chan struct{}), arrived: make(chan struct{}, 2)}
	gated := client(t, addr)
	gated.AddHook(g)
	p := autopipe.New(gated)

	// Two calls in flight, held at the gate.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { require.NoError(t, p.Run(context.Background(), incr, []string{"flying"}).Err()) })
	}
	<-g.arrived
	<-g.arrived

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.Run(ctx, incr, []string{"queued"}).Err()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), time.Second)

	close(g.open)
	wg.Wait()
	require.Equal(t, "2", warm.Get(t.Context(), "flying").Val())
	require.Zero(t, warm.Exists(t.Context(), "queued").Val(), "a call cancelled in the queue was sent")
}
