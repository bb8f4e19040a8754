package hypervisor

import (
	"io"
	"slices"
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	tl := newTail(3)
	var seen []string
	tl.follow(strings.NewReader("one\r\ntwo\n\nthree\nfour\nKernel panic - not syncing"), func(l string) { seen = append(seen, l) })
	if want := []string{"three", "four", "Kernel panic - not syncing"}; !slices.Equal(tl.Lines(), want) {
		t.Errorf("Lines = %q, want %q", tl.Lines(), want)
	}
	if len(seen) != 5 {
		t.Errorf("callback saw %q, want every non-empty line", seen)
	}
	if !tl.contains("panic") || tl.contains("one") {
		t.Error("contains looks beyond the kept lines")
	}
	select {
	case <-tl.done:
	default:
		t.Error("done not closed after EOF")
	}
}

// TestTailHostile feeds what a hostile guest may write: an endless line
// must not grow memory, and escape sequences must not reach a log.
func TestTailHostile(t *testing.T) {
	tl := newTail(3)
	var longest, lines int
	// 64 MiB without a newline, then a terminal escape sequence.
	r := io.MultiReader(io.LimitReader(repeat('x'), 64<<20), strings.NewReader("\x1b[2J\x00evil\xff\n"))
	tl.follow(r, func(l string) {
		lines++
		longest = max(longest, len(l))
	})
	if longest > maxLine {
		t.Errorf("a line of %d bytes was passed on; the bound is %d", longest, maxLine)
	}
	if lines < (64<<20)/maxLine {
		t.Errorf("only %d lines: the endless line was not split", lines)
	}
	last := tl.Lines()[len(tl.Lines())-1]
	if last != "?[2J?evil?" {
		t.Errorf("last line %q, want control characters and bad bytes replaced", last)
	}
}

type repeat byte

func (b repeat) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}
