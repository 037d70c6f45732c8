package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/turnstilehq/turnstile/middleware"
)

// Defaults of a TaskType.
const (
	DefaultQueue    = "default"
	DefaultMaxRetry = 10
	DefaultTimeout  = 30 * time.Second
)

// A TaskType is one kind of task: how its payload is checked, what it
// locks, how it runs, and the options producers enqueue it with. The
// worker and every producer (Producer, the enqueue command, the admin API)
// check payloads with the same Check and Keys.
type TaskType struct {
	// Type is the asynq task type, such as "payment:refund".
	Type string
	// Handler runs the task. Producers do not need it.
	Handler asynq.Handler
	// Check validates a payload; nil accepts any. It returns a
	// *middleware.PayloadError for bad input, which the worker archives
	// without retrying.
	Check func(payload []byte) error
	// Keys, when set, guards the type: the task runs under a lease on the
	// resources it returns.
	Keys middleware.KeyFunc
	// LockTTL is the guarded type's lock TTL (default Config.LockTTL).
	LockTTL time.Duration
	// Queue, MaxRetry and Timeout are the enqueue options (defaults
	// DefaultQueue, DefaultMaxRetry, DefaultTimeout).
	Queue    string
	MaxRetry int
	Timeout  time.Duration
}

func (tt TaskType) withDefaults() TaskType {
	tt.Queue = cmp.Or(tt.Queue, DefaultQueue)
	tt.MaxRetry = cmp.Or(tt.MaxRetry, DefaultMaxRetry)
	tt.Timeout = cmp.Or(tt.Timeout, DefaultTimeout)
	return tt
}

// Options are the type's enqueue options: queue, retries and timeout.
func (tt TaskType) Options() []asynq.Option {
	tt = tt.withDefaults()
	return []asynq.Option{asynq.Queue(tt.Queue), asynq.MaxRetry(tt.MaxRetry), asynq.Timeout(tt.Timeout)}
}

// Validate checks a payload as the worker will: Check, then Keys.
func (tt TaskType) Validate(payload []byte) error {
	if tt.Check != nil {
		if err := tt.Check(payload); err != nil {
			return fmt.Errorf("%s: bad payload: %w", tt.Type, err)
		}
	}
	if tt.Keys != nil {
		rs, err := tt.Keys(asynq.NewTask(tt.Type, payload))
		if err == nil && len(rs) == 0 {
			err = errors.New("no resources to lock")
		}
		if err != nil {
			return fmt.Errorf("%s: bad payload: %w", tt.Type, err)
		}
	}
	return nil
}

// checked runs the type's Check before its handler, so that a bad payload
// of an unguarded type is archived too (the guard checks Keys first).
func (tt TaskType) checked() asynq.Handler {
	if tt.Check == nil {
		return tt.Handler
	}
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if err := tt.Check(t.Payload()); err != nil {
			return fmt.Errorf("%s: bad payload: %w: %w", t.Type(), err, asynq.SkipRetry)
		}
		return tt.Handler.ProcessTask(ctx, t)
	})
}

// indexTypes checks types and indexes them by Type.
func indexTypes(types []TaskType, needHandler bool) (map[string]TaskType, error) {
	byType := make(map[string]TaskType, len(types))
	for _, tt := range types {
		switch _, dup := byType[tt.Type]; {
		case tt.Type == "":
			return nil, errors.New("worker: a task type has no Type")
		case dup:
			return nil, fmt.Errorf("worker: task type %s given twice", tt.Type)
		case needHandler && tt.Handler == nil:
			return nil, fmt.Errorf("worker: task type %s has no Handler", tt.Type)
		}
		byType[tt.Type] = tt.withDefaults()
	}
	return byType, nil
}
