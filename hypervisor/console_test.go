package hypervisor

import (
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
