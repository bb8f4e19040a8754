package harness

import (
	"fmt"
	"os/exec"
	"strings"
)

// StaticC compiles the C program src into a static binary at out, for a
// test that needs a process busybox cannot play (a setuid binary, exact
// system calls). gcc comes with `make deps`.
func StaticC(src, out string) error {
	cmd := exec.Command("gcc", "-static", "-O2", "-x", "c", "-o", out, "-")
	cmd.Stdin = strings.NewReader(src)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gcc -static -o %s: %v: %s", out, err, b)
	}
	return nil
}
