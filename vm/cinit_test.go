package vm

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podvm/podvm/test/harness"
)

// TestGuestCinit: containers the agent creates without runc init (the
// spare init restored with the VM, then a fresh one) behave as runc's: the
// guest's hostname in a new UTS namespace, loopback up in a new network
// namespace, HOME from /etc/passwd. The image plays the attacker: its /tmp
// is a symlink out of the rootfs, and the tmpfs the spec mounts there must
// land inside the rootfs (on its /var), resolved as if the rootfs were /.
func TestGuestCinit(t *testing.T) {
	cfg := harness.VMConfig(t)
	harness.WatchLeaks(t)
	share := t.TempDir()
	for _, id := range []string{"c1", "c2"} {
		rootfs := filepath.Join(share, id, "rootfs")
		if err := harness.BusyboxRootfs(rootfs); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(rootfs, "var", "marker"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(rootfs, "etc", "passwd"), []byte("root:x:0:0:root:/root-home:/bin/sh\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_ = os.RemoveAll(filepath.Join(rootfs, "tmp"))
		if err := os.Symlink("/../../../../../../var", filepath.Join(rootfs, "tmp")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g := bootShared(ctx, t, cfg, "cinit", share)
	host, _ := os.Hostname()
	for _, id := range []string{"c1", "c2"} {
		spec := specconv.Example()
		spec.Root.Path = "/run/podvm/shared/" + id + "/rootfs"
		spec.Root.Readonly = false
		spec.Hostname = ""
		spec.Process.Terminal = false
		spec.Process.Env = []string{"PATH=/bin"}
		// The second is made through the symlink: its directories are
		// created inside the rootfs too.
		spec.Mounts = append(spec.Mounts,
			specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid"}},
			specs.Mount{Destination: "/tmp/made/here", Type: "tmpfs", Source: "tmpfs"})
		spec.Process.Args = []string{"sh", "-c", `echo "host=$(hostname) home=$HOME lo=$(cat /sys/class/net/lo/operstate) var=$(ls /var)"; grep -c -e ' /var ' -e ' /var/made/here ' /proc/self/mountinfo`}
		b, _ := json.Marshal(spec)
		if _, err := g.CreateContainer(ctx, Container{ID: id, Spec: b, Storages: []Storage{shareStorage}, Streams: Streams{Stdout: true}}); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
		if _, err := g.StartProcess(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
		out := readAll(ctx, t, g, id, "", Stdout)
		want := "host=" + host + " home=/root-home lo=unknown var=made\n2\n"
		if out != want {
			t.Errorf("%s printed %q, want %q", id, out, want)
		}
		if exit, err := g.Wait(ctx, id, ""); err != nil || exit.Status != 0 {
			t.Errorf("%s exited %d, %v", id, exit.Status, err)
		}
		if err := g.DeleteContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
}
