package redistest

import (
	"os"
	"path/filepath"
	"testing"
)

// ServerWith is [Server] with more redis-server options, which win over
// the defaults: ServerWith(t, "--appendonly", "yes", "--appendfsync",
// "everysec") keeps an append-only file in the server's directory, which
// [Process.Start] then loads.
func ServerWith(tb testing.TB, args ...string) *Process {
	tb.Helper()
	return start(tb, &Process{t: tb, bin: lookPath(tb, "redis-server"), dir: tb.TempDir(), args: args})
}

// AOFSize returns how many bytes of commands the server's append-only
// file holds now, for [Process.CrashTo].
func (p *Process) AOFSize() int64 {
	p.t.Helper()
	fi, err := os.Stat(p.incrAOF())
	if err != nil {
		p.t.Fatalf("redistest: append-only file of %s: %v", p.Addr(), err)
	}
	return fi.Size()
}

// CrashTo kills the server and cuts its append-only file back to size, as
// a machine crash does to the writes of the last second that
// appendfsync everysec had not yet synced, then starts it again on the
// same port: it loads what the file kept. Writes it acknowledged after
// the file had size bytes are lost, as in production.
func (p *Process) CrashTo(size int64) {
	p.t.Helper()
	p.Stop()
	if err := os.Truncate(p.incrAOF(), size); err != nil {
		p.t.Fatalf("redistest: cut the append-only file of %s: %v", p.Addr(), err)
	}
	p.Start()
}

// incrAOF is the file Redis 7 appends commands to, in its append-only
// directory: one, until a rewrite starts another.
func (p *Process) incrAOF() string {
	p.t.Helper()
	files, err := filepath.Glob(filepath.Join(p.dir, "appendonlydir", "*.incr.aof"))
	if err != nil || len(files) != 1 {
		p.t.Fatalf("redistest: want one incremental append-only file in %s, found %v (%v)", p.dir, files, err)
	}
	return files[0]
}

// Wipe kills the server, removes its append-only files and starts it
// again on the same port, empty: what a restart does to a server without
// persistence, for a suite that crashes one server both ways.
func (p *Process) Wipe() {
	p.t.Helper()
	p.Stop()
	if err := os.RemoveAll(filepath.Join(p.dir, "appendonlydir")); err != nil {
		p.t.Fatalf("redistest: remove the append-only files of %s: %v", p.Addr(), err)
	}
	p.Start()
}
