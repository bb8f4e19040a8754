package hypervisor

import (
	"bufio"
	"io"
	"strings"
	"sync"
)

// tail keeps the last lines of an output stream (the guest console, QEMU's
// own stderr) so that errors can show what happened just before.
type tail struct {
	mu    sync.Mutex
	lines []string
	max   int
	done  chan struct{}
}

func newTail(max int) *tail {
	return &tail{max: max, done: make(chan struct{})}
}

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == t.max {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:t.max-1]
	}
	t.lines = append(t.lines, line)
}

// Lines returns the kept lines, oldest first.
func (t *tail) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.lines...)
}

// contains reports whether a kept line contains s.
func (t *tail) contains(s string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range t.lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// follow reads r line by line until EOF, keeping each line and passing it
// to fn (which may be nil). A final line without a newline, such as the
// last words of a kernel panic, is kept too.
func (t *tail) follow(r io.Reader, fn func(string)) {
	defer close(t.done)
	br := bufio.NewReaderSize(r, 4096)
	for {
		line, err := br.ReadString('\n')
		line = strings.TrimRight(line, "\r\n")
		if line != "" {
			t.add(line)
			if fn != nil {
				fn(line)
			}
		}
		if err != nil {
			return
		}
	}
}

// format renders the kept lines for an error message.
func formatTail(what string, lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return "\nlast " + what + " lines:\n  " + strings.Join(lines, "\n  ")
}
