package agent

import (
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"time"
)

// The agent logs to the guest console, which the host copies into the shim's
// log with a prefix. No logging library: every package imported here adds to
// PID 1's start-up time under TCG.

type level int

const (
	levelDebug level = iota
	levelInfo
	levelWarn
	levelError
)

var (
	logMu    sync.Mutex
	logDebug bool
	logStart = time.Now()
)

func (l level) String() string {
	return [...]string{"debug", "info", "warn", "error"}[l]
}

func logf(l level, format string, args ...any) {
	if l == levelDebug && !logDebug {
		return
	}
	msg := fmt.Sprintf(format, args...)
	logMu.Lock()
	defer logMu.Unlock()
	fmt.Fprintf(os.Stderr, "podvm-agent: %s +%dms %s\n", l, time.Since(logStart).Milliseconds(), msg)
}

// recoverPanic keeps a bug in one goroutine from killing PID 1, which would
// panic the guest kernel and take every container with it.
func recoverPanic(where string) {
	if r := recover(); r != nil {
		logf(levelError, "panic in %s: %v\n%s", where, r, debug.Stack())
	}
}
