package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/turnstilehq/turnstile/worker"
)

const enqueueAbout = `Checks a payload with the same code the worker runs and enqueues a task of
the given type with the type's queue, retries and timeout. Prints the task ID.
Needs TURNSTILE_REDIS_URL (or -redis-url): an embedded Redis would lose the task.`

// runEnqueue is "turnstile enqueue <type> -json '<payload>'".
func runEnqueue(c *cli, args []string) int {
	fs := flag.NewFlagSet("turnstile enqueue", flag.ContinueOnError)
	payload := fs.String("json", "", "the task's payload, as JSON")
	taskID := fs.String("task-id", "", "the task's ID; a second task with the same ID is refused")
	unique := fs.Duration("unique", 0, "refuse a duplicate (same type, queue and payload) for this long, e.g. 1h")
	queue := fs.String("queue", "", "enqueue to this queue instead of the type's own")
	// The type comes first; package flag stops at the first non-flag.
	var typ string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		typ, args = args[0], args[1:]
	}
	cfg, code, ok := loadConfig(c, fs, args, "enqueue <type>", enqueueAbout)
	if !ok {
		return code
	}
	switch {
	case typ == "" || fs.NArg() > 0:
		fmt.Fprintf(c.stderr, "turnstile enqueue: want one task type before the flags, got %q\n", append([]string{typ}, fs.Args()...))
		return exitUsage
	case cfg.RedisURL == "":
		fmt.Fprintln(c.stderr, "turnstile enqueue: set TURNSTILE_REDIS_URL or -redis-url: an embedded Redis would lose the task on exit")
		return exitUsage
	}
	var opts []asynq.Option
	if *taskID != "" {
		opts = append(opts, asynq.TaskID(*taskID))
	}
	if *unique > 0 {
		opts = append(opts, asynq.Unique(*unique))
	}
	if *queue != "" {
		opts = append(opts, asynq.Queue(*queue))
	}

	cfg.LogLevel = max(cfg.LogLevel, slog.LevelWarn) // stdout is the task ID; stderr only problems
	logger := cfg.NewLogger(c.stderr)
	rdb, closeRedis, err := worker.OpenRedis(c.ctx, cfg, logger)
	if err != nil {
		fmt.Fprintf(c.stderr, "turnstile enqueue: %v\n", err)
		return exitError
	}
	defer func() {
		if err := closeRedis(); err != nil {
			logger.Warn("close redis", slog.Any("error", err))
		}
	}()
	producer, err := worker.NewProducer(asynq.NewClientFromRedisClient(rdb), nil, c.taskTypes...)
	if err != nil {
		fmt.Fprintf(c.stderr, "turnstile enqueue: %v\n", err)
		return exitError
	}
	info, err := producer.Enqueue(c.ctx, typ, []byte(*payload), opts...)
	switch {
	case errors.Is(err, worker.ErrUnknownType):
		fmt.Fprintf(c.stderr, "turnstile enqueue: %v; known types: %s\n", err, knownTypes(producer))
		return exitUsage
	case err != nil:
		fmt.Fprintf(c.stderr, "turnstile enqueue: %v\n", err)
		return exitError
	}
	fmt.Fprintln(c.stdout, info.ID)
	return exitOK
}

func knownTypes(p *worker.Producer) string {
	var names []string
	for _, tt := range p.Types() {
		names = append(names, tt.Type)
	}
	if len(names) == 0 {
		return "none yet (this binary serves no task types)"
	}
	return strings.Join(names, ", ")
}
