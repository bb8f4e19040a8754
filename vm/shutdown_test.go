package vm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podvm/podvm/test/harness"
)

// mappedWriter dirties a page of a file on the share through a shared
// mapping, says so and waits with the mapping in place: the page stays in
// the guest's page cache until the mapping goes (9p writes it back then),
// a sync, or the kernel's writeback after 30 s.
const mappedWriter = `#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
	int fd = open("/mapped", O_RDWR | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, 4096) < 0) return 1;
	char *p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) return 2;
	memcpy(p, "written through a mapping", 25);
	printf("written\n");
	fflush(stdout);
	for (;;) pause();
}
`

// TestShutdownSyncsMappedWrites: what a container wrote through a shared
// mapping is on the host once Shutdown returns. With the container deleted
// first, or its process ended (as the host leaves a pod's last container),
// the agent has only its spare inits left and syncs without signalling
// them; with the writer still running it kills every process, then syncs.
func TestShutdownSyncsMappedWrites(t *testing.T) {
	for _, tt := range []struct {
		name   string
		before func(ctx context.Context, g *Guest) error
	}{
		{"deleted", func(ctx context.Context, g *Guest) error { return g.DeleteContainer(ctx, "c1") }},
		{"exited", func(ctx context.Context, g *Guest) error {
			if err := g.Signal(ctx, "c1", "", uint32(syscall.SIGKILL), false); err != nil {
				return err
			}
			_, err := g.Wait(ctx, "c1", "")
			return err
		}},
		{"running", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var rootfs string
			g := startSpec(ctx, t, "mapped-"+tt.name, Streams{Stdout: true}, func(spec *specs.Spec, r string) {
				if err := harness.StaticC(mappedWriter, filepath.Join(r, "mapped-writer")); err != nil {
					t.Fatal(err)
				}
				spec.Process.Args = []string{"/mapped-writer"}
				rootfs = r
			})
			if out, err := firstOutput(ctx, g, "c1", "", Stdout); err != nil || out != "written\n" {
				t.Fatalf("the writer says %q, %v", out, err)
			}
			file := filepath.Join(rootfs, "mapped")
			want := []byte("written through a mapping")
			// Else the test would not tell a sync from the writeback.
			if b, err := os.ReadFile(file); err != nil || bytes.HasPrefix(b, want) {
				t.Fatalf("before the shutdown the host has %q, %v: want the page still in the guest", b[:min(len(b), 32)], err)
			}
			if tt.before != nil {
				if err := tt.before(ctx, g); err != nil {
					t.Fatal(err)
				}
			}
			if err := g.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(file); err != nil || !bytes.HasPrefix(b, want) {
				t.Errorf("after the shutdown the host has %q, %v; want %q first", b[:min(len(b), 32)], err, want)
			}
		})
	}
}
