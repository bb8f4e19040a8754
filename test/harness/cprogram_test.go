package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestStaticC builds a program that prints its effective uid (the
// conformance images' nnp) and runs it; a program that does not compile
// is an error naming gcc's complaint.
func TestStaticC(t *testing.T) {
	_, err := exec.LookPath("gcc")
	Need(t, err == nil, "needs gcc (make deps)")
	bin := filepath.Join(t.TempDir(), "uid")
	if err := StaticC("#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf(\"uid %d\\n\", geteuid()); return 0; }\n", bin); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin).Output()
	if want := fmt.Sprintf("uid %d\n", os.Geteuid()); err != nil || string(out) != want {
		t.Errorf("the program said %q (%v), want %q", out, err, want)
	}
	if f, _ := exec.Command("file", bin).Output(); len(f) > 0 && !strings.Contains(string(f), "statically linked") {
		t.Errorf("not static: %s", f)
	}
	err = StaticC("int main(void) { return undefined; }\n", filepath.Join(t.TempDir(), "bad"))
	if err == nil || !strings.Contains(err.Error(), "undefined") {
		t.Errorf("a program that does not compile: %v", err)
	}
}
