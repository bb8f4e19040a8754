package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/test/harness"
)

// hostSource makes what critest makes for its mount tests: a directory,
// itself a shared mount, with a tmpfs mounted below it.
func hostSource(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(filepath.Join(src, "tmpfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		src, dst, fs string
		flags        uintptr
	}{
		{src, src, "", unix.MS_BIND | unix.MS_REC},
		{"", src, "", unix.MS_SHARED | unix.MS_REC},
		{"tmpfs", filepath.Join(src, "tmpfs"), "tmpfs", 0},
	} {
		if err := unix.Mount(m.src, m.dst, m.fs, m.flags, ""); err != nil {
			t.Fatalf("mount %s: %v", m.dst, err)
		}
	}
	t.Cleanup(func() {
		_ = unix.Unmount(src, unix.MNT_DETACH)
	})
	return src
}

func writable(path string) error {
	f, err := os.Create(filepath.Join(path, "probe"))
	if err == nil {
		f.Close()
	}
	return err
}

// TestBindIntoShare binds a host directory into a share as runc would
// bind it into a container: ro leaves its submounts as they are, rro makes
// them read-only too, rslave brings host mounts made later in, rprivate
// does not. Each submount is exposed beside the bind (the guest mounts it
// on top), so the host can still unmount and remove its own directories
// while the binds exist, as it can beside runc's containers.
func TestBindIntoShare(t *testing.T) {
	harness.NeedRoot(t)
	base := t.TempDir()
	share, err := openDir(base)
	if err != nil {
		t.Fatal(err)
	}
	defer share.Close()
	defer func() {
		if err := unmountTree(base, "."); err != nil {
			t.Error(err)
		}
	}()
	src := hostSource(t)
	tmpfs := []submount{{rel: "tmpfs"}}
	cases := []struct {
		opts       []string
		top, sub   bool // writable
		subs       []submount
		propagates bool
	}{
		{[]string{"rbind", "rw"}, true, true, tmpfs, true},
		{[]string{"rbind", "ro"}, false, true, tmpfs, true},
		{[]string{"rbind", "rro", "rprivate"}, false, false, []submount{{rel: "tmpfs", readonly: true}}, false},
		{[]string{"rbind", "ro", "rslave"}, false, true, tmpfs, true},
		{[]string{"bind", "ro"}, false, false, nil, true},
	}
	var dirs []string
	for i, tc := range cases {
		rel := filepath.Join("c", "mounts", string(rune('0'+i)))
		subs, err := bindIntoShare(share, specs.Mount{Source: src, Destination: "/mnt", Type: "bind", Options: tc.opts}, rel)
		if err != nil {
			t.Fatalf("%v: %v", tc.opts, err)
		}
		if !slices.Equal(subs, tc.subs) {
			t.Errorf("%v: submounts %v, want %v", tc.opts, subs, tc.subs)
		}
		dir := filepath.Join(base, rel)
		dirs = append(dirs, dir)
		if err := writable(dir); (err == nil) != tc.top || (err != nil && !errors.Is(err, unix.EROFS)) {
			t.Errorf("%v: write to the bind: %v, want writable %v", tc.opts, err, tc.top)
		}
		if len(subs) > 0 {
			if err := writable(dir + ".0"); (err == nil) != tc.sub || (err != nil && !errors.Is(err, unix.EROFS)) {
				t.Errorf("%v: write to its submount: %v, want writable %v", tc.opts, err, tc.sub)
			}
		}
	}
	// A mount the host makes later, below the source.
	late := filepath.Join(src, "late")
	if err := os.Mkdir(late, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", late, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	for i, tc := range cases {
		var st unix.Statfs_t
		err := unix.Statfs(filepath.Join(dirs[i], "late"), &st)
		if got := err == nil && st.Type == unix.TMPFS_MAGIC; got != tc.propagates {
			t.Errorf("%v: a later host mount shows: %v (%v), want %v", tc.opts, got, err, tc.propagates)
		}
	}
	// The host cleans up its own mounts and directories (critest does):
	// nothing of the share holds them.
	for _, d := range []string{late, filepath.Join(src, "tmpfs")} {
		if err := unix.Unmount(d, 0); err != nil {
			t.Fatalf("unmount %s: %v", d, err)
		}
		if err := os.Remove(d); err != nil {
			t.Errorf("the host cannot remove %s while the share binds its parent: %v", d, err)
		}
	}
}

// TestGuestSpecBinds: the guest gets rro as ro (the host made the tree
// read-only) and a bind's submounts, exposed beside it, mounted on top.
func TestGuestSpecBinds(t *testing.T) {
	in := &specs.Spec{
		Process: &specs.Process{Args: []string{"sh"}},
		Mounts: []specs.Mount{
			{Destination: "/a", Type: "bind", Source: "/host/a", Options: []string{"rbind", "rro", "rprivate"}},
			{Destination: "/b", Type: "bind", Source: "/host/b", Options: []string{"rbind", "ro", "rslave"}},
		},
	}
	gs, err := guestSpec(in, translation{
		id:        "c",
		binds:     map[int]string{0: guestMount("c", 0), 1: guestMount("c", 1)},
		submounts: map[int][]submount{1: {{rel: "tmpfs"}, {rel: "x/ro", readonly: true}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []specs.Mount{
		{Destination: "/a", Type: "bind", Source: guestMount("c", 0), Options: []string{"rbind", "ro", "rprivate"}},
		{Destination: "/b", Type: "bind", Source: guestMount("c", 1), Options: []string{"rbind", "ro", "rslave"}},
		{Destination: "/b/tmpfs", Type: "bind", Source: guestMount("c", 1) + ".0", Options: []string{"rbind", "rw", "rslave"}},
		{Destination: "/b/x/ro", Type: "bind", Source: guestMount("c", 1) + ".1", Options: []string{"rbind", "ro", "rslave"}},
	}
	if len(gs.Mounts) != len(want) {
		t.Fatalf("guest mounts %+v", gs.Mounts)
	}
	for i := range want {
		if g := gs.Mounts[i]; g.Destination != want[i].Destination || g.Source != want[i].Source || !slices.Equal(g.Options, want[i].Options) {
			t.Errorf("guest mount %d: %+v, want %+v", i, g, want[i])
		}
	}
	if !slices.Contains(in.Mounts[0].Options, "rro") {
		t.Error("guestSpec changed the caller's spec")
	}
}
