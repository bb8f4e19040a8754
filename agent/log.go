package agent

import (
	"fmt"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// The agent logs to the guest console, which the host copies into the shim's
// log with a prefix. No logging library: every package imported here adds to
// PID 1's start-up time under TCG.
//
// Lines go through a buffered channel to one writer goroutine, so a slow or
// stalled console never blocks PID 1's real work; when the buffer is full,
// lines are dropped and counted.

type level int

const (
	levelDebug level = iota
	levelInfo
	levelWarn
	levelError
)

var (
	logDebug   bool
	logStart   = time.Now()
	logLines   = make(chan string, 256)
	logDropped atomic.Int64
)

func init() {
	go func() {
		for line := range logLines {
			if n := logDropped.Swap(0); n > 0 {
				fmt.Fprintf(os.Stderr, "podvm-agent: warn %d log lines dropped (console too slow)\n", n)
			}
			os.Stderr.WriteString(line)
		}
	}()
}

func (l level) String() string {
	return [...]string{"debug", "info", "warn", "error"}[l]
}

func logf(l level, format string, args ...any) {
	if l == levelDebug && !logDebug {
		return
	}
	line := fmt.Sprintf("podvm-agent: %s +%dms %s\n", l, time.Since(logStart).Milliseconds(), fmt.Sprintf(format, args...))
	select {
	case logLines <- line:
	default:
		logDropped.Add(1)
	}
}

// recoverPanic keeps a bug in one goroutine from killing PID 1, which would
// panic the guest kernel and take every container with it.
func recoverPanic(where string) {
	if r := recover(); r != nil {
		logf(levelError, "panic in %s: %v\n%s", where, r, debug.Stack())
	}
}

// flushLogs gives the writer a moment to empty the buffer, for the last
// words before the guest powers off.
func flushLogs(max time.Duration) {
	for deadline := time.Now().Add(max); len(logLines) > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

// setupLibcontainerLogs sends libcontainer's logrus output through the
// agent's console writer.
func setupLibcontainerLogs(debug bool) {
	logrus.SetOutput(logWriter{})
	logrus.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true, DisableQuote: true})
	logrus.SetLevel(logrus.WarnLevel)
	if debug {
		logrus.SetLevel(logrus.DebugLevel)
	}
}

type logWriter struct{}

func (logWriter) Write(b []byte) (int, error) {
	select {
	case logLines <- fmt.Sprintf("podvm-agent: libcontainer: +%dms %s", time.Since(logStart).Milliseconds(), b):
	default:
		logDropped.Add(1)
	}
	return len(b), nil
}
