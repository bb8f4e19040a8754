package hypervisor

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"sync"
	"unicode/utf8"
)

// maxLine bounds a console line: the guest writes what it likes, and an
// endless line must not grow the shim's memory. Longer lines are split.
const maxLine = 4096

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
// last words of a kernel panic, is kept too. Lines are at most maxLine
// bytes and carry no control characters: they come from the guest.
func (t *tail) follow(r io.Reader, fn func(string)) {
	defer close(t.done)
	br := bufio.NewReaderSize(r, maxLine)
	for {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			err = nil
		}
		if line := printable(b); line != "" {
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

// printable is a console line fit for a log: trailing line ends dropped,
// invalid UTF-8 and control characters (a terminal escape sequence, say)
// replaced.
func printable(b []byte) string {
	s := strings.TrimRight(string(b), "\r\n")
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || (r < 0x20 && r != '\t') || r == 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || (r < 0x20 && r != '\t') || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// format renders the kept lines for an error message.
func formatTail(what string, lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return "\nlast " + what + " lines:\n  " + strings.Join(lines, "\n  ")
}
