package vm

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podvm/podvm/test/harness"
)

// holeWriter writes a page of 'a' from a buffer whose next page is
// unmapped: the kernel copies the first page, adds a buffer for the
// second, faults, and returns 4096 with an empty buffer left in the pipe.
// A page of 'b' follows it. Any program can do this by mistake, or on
// purpose.
const holeWriter = `#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
	char *b = mmap(0, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
	if (b == MAP_FAILED) return 2;
	memset(b, 'a', 4096);
	if (mprotect(b + 4096, 4096, PROT_NONE)) return 3;
	if (write(1, b, 8192) != 4096) return 4;
	memset(b, 'b', 4096);
	if (write(1, b, 4096) != 4096) return 5;
	return 0;
}
`

// TestGuestOutputEmptyPipeBuffer: a process's pipe that holds an empty
// buffer between two full ones is spliced to the host whole. The guest
// kernel's virtio console turned the empty buffer into a descriptor of
// zero bytes, and QEMU then marked the whole virtio-serial device broken:
// that stream, every other and the agent's own port stopped (the pod was
// lost). A 1-in-8 hang of TestGuestOutputFlow was this.
func TestGuestOutputEmptyPipeBuffer(t *testing.T) {
	_, err := exec.LookPath("gcc")
	harness.Need(t, err == nil, "needs gcc (make deps)")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := startSpec(ctx, t, "hole", Streams{Stdout: true}, func(spec *specs.Spec, rootfs string) {
		if err := harness.StaticC(holeWriter, filepath.Join(rootfs, "hole")); err != nil {
			t.Fatal(err)
		}
		spec.Process.Args = []string{"/hole"}
	})
	// Both writes are in the pipe before anything reads it: the first
	// splice meets the empty buffer between them.
	if exit, err := g.Wait(ctx, "c1", ""); err != nil || exit.Status != 0 {
		t.Fatalf("the writer: %+v, %v", exit, err)
	}
	var out bytes.Buffer
	if err := g.CopyOutput(ctx, "c1", "", Stdout, &out); err != nil {
		t.Fatalf("stdout: %v (after %d bytes)", err, out.Len())
	}
	if want := strings.Repeat("a", 4096) + strings.Repeat("b", 4096); out.String() != want {
		t.Errorf("stdout: %d bytes, want 4096 of a then 4096 of b", out.Len())
	}
	// The agent, on the same device, still answers.
	if err := g.DeleteContainer(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
}
