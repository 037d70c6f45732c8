package redistest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/internal/keyslot"
)

// CheckSlots makes c fail tb (with Errorf) whenever it sends a script call
// (EVAL, EVALSHA, FCALL and their _RO forms), alone or in a pipeline, whose
// keys do not all hash to one Redis Cluster slot. Such a call works on a
// single Redis and fails on Cluster with CROSSSLOT, so a test that passes
// with CheckSlots on its client proves that every script it ran would run
// on Cluster unchanged.
func CheckSlots(tb testing.TB, c redis.UniversalClient) {
	tb.Helper()
	c.AddHook(slotHook{tb})
}

type slotHook struct{ tb testing.TB }

func (slotHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h slotHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.check(cmd)
		return next(ctx, cmd)
	}
}

func (h slotHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			h.check(cmd)
		}
		return next(ctx, cmds)
	}
}

func (h slotHook) check(cmd redis.Cmder) {
	if err := ScriptSlotErr(cmd.Args()); err != nil {
		h.tb.Errorf("redistest: %v", err)
	}
}

// ScriptSlotErr returns an error naming the keys when args is a script call
// whose keys span several Cluster slots, and nil otherwise (also for any
// other command).
func ScriptSlotErr(args []any) error {
	if len(args) < 3 {
		return nil
	}
	name, _ := args[0].(string)
	switch strings.ToLower(name) {
	case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro":
	default:
		return nil
	}
	n, err := strconv.Atoi(fmt.Sprint(args[2]))
	if err != nil {
		return fmt.Errorf("%s with numkeys %v: %w", name, args[2], err)
	}
	if n < 2 || len(args) < 3+n {
		return nil
	}
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint(args[3+i])
	}
	first := keyslot.Of(keys[0])
	for _, k := range keys[1:] {
		if keyslot.Of(k) != first {
			return fmt.Errorf("%s with keys in several Cluster slots (CROSSSLOT there): %q", name, keys)
		}
	}
	return nil
}
