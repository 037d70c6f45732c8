package main

import "github.com/turnstilehq/turnstile/worker"

// taskTypes are the task types this binary serves and enqueues. The jobs
// package (payment confirmation, refund, revoke) adds its types here when
// it lands; until then a worker serves none and says so at start.
func taskTypes() []worker.TaskType { return nil }
