package middleware

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// An Owner is who holds a guarded lock, as stored with it (lock.Options.
// Owner) so that contenders' errors and operators' pages can say so.
type Owner struct {
	TaskType, TaskID string
	// Worker is the process: host:pid.
	Worker string
	// Since is when the task set out to take the lock.
	Since time.Time
}

// String is the stored form: "type/id@worker#unix-ms", with no '|'
// (which the lock reserves).
func (o Owner) String() string {
	s := fmt.Sprintf("%s/%s@%s#%d", o.TaskType, o.TaskID, o.Worker, o.Since.UnixMilli())
	return strings.ReplaceAll(s, "|", "/")
}

// ParseOwner reads an Owner's String. What is not in that form (a lock
// taken outside the guard) comes back as the TaskType alone.
func ParseOwner(s string) Owner {
	rest, ms, ok := cutLast(s, "#")
	if !ok {
		return Owner{TaskType: s}
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return Owner{TaskType: s}
	}
	task, worker, ok := cutLast(rest, "@")
	if !ok {
		return Owner{TaskType: s}
	}
	typ, id, _ := strings.Cut(task, "/")
	return Owner{TaskType: typ, TaskID: id, Worker: worker, Since: time.UnixMilli(n)}
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// thisWorker names this process in owners.
var thisWorker = func() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return host + ":" + strconv.Itoa(os.Getpid())
}()

// describe says who holds a lock, for a person: "payment:refund task t-1
// on host:42 for 3s", or the owner as stored when it is not a task's.
func describe(stored string) string {
	o := ParseOwner(stored)
	switch {
	case stored == "":
		return "unknown"
	case o.Worker == "":
		return stored
	}
	return fmt.Sprintf("%s task %s on %s for %s", o.TaskType, o.TaskID, o.Worker, time.Since(o.Since).Round(time.Millisecond))
}
