package worker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/trace"

	"github.com/turnstilehq/turnstile/telemetry"
)

// ErrUnknownType reports a task type no TaskType describes.
var ErrUnknownType = errors.New("unknown task type")

// A Producer enqueues tasks of known types, checked as the worker will
// check them and with their default options, inside a traced send span.
type Producer struct {
	client *asynq.Client
	tp     trace.TracerProvider
	types  map[string]TaskType
}

// NewProducer returns a Producer of types through client. A nil tp means
// the otel global.
func NewProducer(client *asynq.Client, tp trace.TracerProvider, types ...TaskType) (*Producer, error) {
	byType, err := indexTypes(types, false)
	if err != nil {
		return nil, err
	}
	return &Producer{client: client, tp: tp, types: byType}, nil
}

// Types returns the known task types, sorted by Type.
func (p *Producer) Types() []TaskType {
	return slices.SortedFunc(maps.Values(p.types), func(a, b TaskType) int { return strings.Compare(a.Type, b.Type) })
}

// Enqueue checks payload and enqueues a task of type typ with the type's
// options, then opts (a later option wins, so opts may override the
// queue or add a TaskID or Unique). It returns ErrUnknownType for a type
// it does not know and the payload's error, wrapping a
// *middleware.PayloadError, for a bad payload.
func (p *Producer) Enqueue(ctx context.Context, typ string, payload []byte, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	tt, ok := p.types[typ]
	if !ok {
		return nil, fmt.Errorf("worker: %q: %w", typ, ErrUnknownType)
	}
	if err := tt.Validate(payload); err != nil {
		return nil, err
	}
	return telemetry.Enqueue(ctx, p.tp, p.client, asynq.NewTask(typ, payload), append(tt.Options(), opts...)...)
}
