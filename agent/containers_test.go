package agent

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// TestValidID: validID accepts exactly what the pattern it replaced did,
// ^[\w+.-]{1,128}$ (RE2's \w is ASCII), for every byte and for random and
// edge-length IDs, hostile ones included.
func TestValidID(t *testing.T) {
	pattern := regexp.MustCompile(`^[\w+.-]{1,128}$`)
	check := func(id string) {
		t.Helper()
		if got, want := validID(id), pattern.MatchString(id); got != want {
			t.Errorf("validID(%q) = %v, want %v", id, got, want)
		}
	}
	for b := 0; b < 256; b++ {
		check(string([]byte{byte(b)}))
		check("a" + string([]byte{byte(b)}) + "z")
	}
	for _, id := range []string{"", "x", strings.Repeat("a", 127), strings.Repeat("a", 128), strings.Repeat("a", 129),
		"../etc", "a/b", "a b", "a\x00b", "ü", "sha256:abc", "c1.exec-2_x+y", "\n"} {
		check(id)
	}
	alphabet := []byte("aZ09_+.-/ :\x00\xffé")
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		b := make([]byte, r.IntN(140))
		for j := range b {
			b[j] = alphabet[r.IntN(len(alphabet))]
		}
		check(string(b))
	}
}
