package redistest_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/internal/redistest"
)

func TestScriptSlotErr(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		args  []any
		cross bool
	}{
		{"OneTag", []any{"evalsha", "sha", 2, "a:{x}", "b:{x}", "arg"}, false},
		{"TwoTags", []any{"evalsha", "sha", 2, "a:{x}", "a:{y}"}, true},
		{"EvalTwoTags", []any{"EVAL", "return 1", "2", "{x}", "{y}"}, true},
		{"FcallTwoTags", []any{"fcall", "f", 2, "{x}", "{y}"}, true},
		{"ArgsDoNotCount", []any{"evalsha", "sha", 1, "{x}", "{y}"}, false},
		{"NotAScript", []any{"mget", "{x}", "{y}"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := redistest.ScriptSlotErr(tc.args); (err != nil) != tc.cross {
				t.Errorf("ScriptSlotErr(%v) = %v, want cross-slot %t", tc.args, err, tc.cross)
			}
		})
	}
}

// The hook sees script calls made through go-redis's Script, alone and in
// pipelines; a recording TB stands in for the test it would fail.
func TestCheckSlots(t *testing.T) {
	t.Parallel()
	_, rdb := redistest.MiniClient(t)
	rec := &recorder{TB: t}
	redistest.CheckSlots(rec, rdb)
	script := redis.NewScript(`return #KEYS`)
	ctx := t.Context()
	if err := script.Run(ctx, rdb, []string{"a{x}", "b{x}"}).Err(); err != nil {
		t.Fatal(err)
	}
	if rec.errors != 0 {
		t.Fatalf("one-slot call reported %d times", rec.errors)
	}
	if err := script.Run(ctx, rdb, []string{"a{x}", "a{y}"}).Err(); err != nil {
		t.Fatal(err)
	}
	pipe := rdb.Pipeline()
	script.Run(ctx, pipe, []string{"a{x}", "a{z}"})
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if rec.errors != 2 {
		t.Fatalf("two cross-slot calls reported %d times, want 2", rec.errors)
	}
}

type recorder struct {
	testing.TB
	errors int
}

func (r *recorder) Errorf(string, ...any) { r.errors++ }
