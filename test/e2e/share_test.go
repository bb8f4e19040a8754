package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podvm/podvm/test/harness"
)

// TestGuestRootAdversary plays a guest whose root is hostile: from the
// debug console (a root shell in the guest, outside every container) it
// plants links in the shared directory, where the host mounts containers'
// files, and races the host while containers come and go. The host's file
// system must stay untouched, every host-side mount of the share must be
// nosuid and nodev, read-only binds must be read-only in every submount,
// and nothing may be left. The same attacks run over each shared
// filesystem (over virtio-fs, the guest's requests go to a virtiofsd
// instead of QEMU).
func TestGuestRootAdversary(t *testing.T) {
	s := newSuite(t)
	for _, fs := range []string{"9p", "virtio-fs"} {
		t.Run(fs, func(t *testing.T) { testGuestRootAdversary(t, s, fs) })
	}
}

func testGuestRootAdversary(t *testing.T, s *suite, sharedFS string) {
	stateDir := filepath.Join(s.ctd.Dir, "podvm")
	dir := t.TempDir()
	withConsole := filepath.Join(dir, "console.toml")
	conf := fmt.Sprintf("debug_console = true\n[hypervisor]\nshared_fs = %q\n", sharedFS)
	if err := os.WriteFile(withConsole, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// What the guest aims at on the host.
	victim := filepath.Join(dir, "victim")
	canary := filepath.Join(victim, "canary")
	if err := os.MkdirAll(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(canary, []byte("untouched\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	untouched := func(when string) {
		t.Helper()
		b, err := os.ReadFile(canary)
		entries, _ := os.ReadDir(victim)
		if err != nil || string(b) != "untouched\n" || len(entries) != 1 {
			t.Errorf("%s: the host's victim directory changed: canary %q (%v), %d entries", when, b, err, len(entries))
		}
		if m := harness.MountsUnder(victim); len(m) > 0 {
			t.Errorf("%s: something was mounted on the host's victim directory: %v", when, m)
		}
	}

	pod := s.id(podvm)
	if r := s.ctr(nil, "run", "-d", "--runtime", podvm, "--runtime-config-path", withConsole, harness.BusyboxImage, pod, "sleep", "100000"); r.code != 0 {
		t.Fatalf("ctr run: %+v", r)
	}
	var members []string
	defer func() {
		for _, id := range append(members, pod) {
			s.ctr(nil, "task", "kill", "-s", "KILL", id)
			waitFor(t, func() bool {
				return !strings.Contains(s.ctr(nil, "task", "ls").stdout, id+" ") || strings.Contains(s.ctr(nil, "task", "ls").stdout, "STOPPED")
			})
			s.ctr(nil, "task", "delete", id)
			s.ctr(nil, "container", "delete", id)
		}
		untouched("after the pod was removed")
	}()
	// guest runs a script as root in the guest.
	guest := func(script string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, harness.ShimBinary(), "console", "--state-dir", stateDir, pod)
		cmd.Stdin = strings.NewReader("S=/run/podvm/shared\n" + script + "\nexit 0\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("console: %v: %s", err, out)
		}
		return string(out)
	}
	// member runs a container in the pod's VM (ctr's way to group).
	member := func(id string, flags ...string) result {
		a := append([]string{"run", "-d", "--runtime", podvm, "--annotation", "io.podvm.group=" + pod}, flags...)
		r := s.ctr(nil, append(a, harness.BusyboxImage, id, "sleep", "100000")...)
		if r.code == 0 {
			members = append(members, id)
		}
		return r
	}

	t.Run("console busybox", func(t *testing.T) {
		// The staged busybox replaced by a link to a host file, then the
		// whole console directory by a link to a host directory: the
		// next consoles must write neither (and, over virtio-fs, must
		// not find the guest's links in its cache either).
		guest("for d in $S/.debug-console*; do rm -f $d/busybox; ln -s " + canary + " $d/busybox 2>&1; ls -l $d; done")
		if out := guest("echo console-$((40+2))"); !strings.Contains(out, "console-42") {
			t.Errorf("console after the link was planted: %q", out)
		}
		untouched("after a console with a planted busybox link")
		guest("for d in $S/.debug-console*; do rm -rf $d; ln -s " + victim + " $d; done")
		if out := guest("echo console-$((40+3))"); !strings.Contains(out, "console-43") {
			t.Errorf("console after its directory was linked away: %q", out)
		}
		untouched("after a console with a planted directory link")
		guest("rm -f $S/.debug-console*")
	})

	t.Run("planted container directory", func(t *testing.T) {
		// The guest guesses the next container's ID and prepares a
		// directory of that name whose rootfs is a link to the host's
		// victim. The host puts each container in a directory of a name
		// nobody can guess (the ID and a random suffix): the planted
		// one is left as it is, and the container runs.
		id := s.id(podvm)
		guest("mkdir $S/" + id + "; ln -s " + victim + " $S/" + id + "/rootfs")
		if r := member(id); r.code != 0 {
			t.Errorf("a container whose ID the guest planted a directory for: %+v", r)
		}
		untouched("after the planted container directory")
		if out := guest("ls -l $S/" + id + "/rootfs"); !strings.Contains(out, "-> "+victim) {
			t.Errorf("the planted directory was touched: %q", out)
		}
		guest("rm -rf $S/" + id)
	})

	t.Run("racing links", func(t *testing.T) {
		// While the host creates a container with a bind mount, the
		// guest keeps planting links where the host is about to make
		// directories, in the container's directory as soon as it sees
		// it. Whoever wins, nothing lands on the host.
		id := s.id(podvm)
		src := filepath.Join(dir, "volume")
		os.MkdirAll(src, 0o755)
		guest("(for i in $(seq 2000); do for d in $S/" + id + "*; do ln -s " + victim + " $d/mounts 2>/dev/null; ln -s " + victim + " $d/rootfs 2>/dev/null; done; done) >/dev/null 2>&1 &")
		r := member(id, "--mount", "type=bind,src="+src+",dst=/data,options=rbind")
		t.Logf("container created while the guest raced: exit %d %s", r.code, strings.TrimSpace(r.stderr))
		if r.code != 0 {
			s.ctr(nil, "container", "delete", id)
		}
		time.Sleep(2 * time.Second)
		untouched("after racing links")
	})

	t.Run("links at delete", func(t *testing.T) {
		// The guest moves a container's directory away and leaves a link
		// to the host's root in its place: deleting the container must
		// unmount and remove nothing outside the share.
		id := s.id(podvm)
		if r := member(id); r.code != 0 {
			t.Fatalf("member: %+v", r)
		}
		guest("for d in $S/" + id + ".*; do mv $d $d.moved; ln -s " + victim + " $d; done")
		s.ctr(nil, "task", "kill", "-s", "KILL", id)
		waitFor(t, func() bool { return strings.Contains(s.ctr(nil, "task", "ls").stdout, "STOPPED") })
		if r := s.ctr(nil, "task", "delete", id); r.code != 0 {
			t.Errorf("delete with a planted link: %+v", r)
		}
		s.ctr(nil, "container", "delete", id)
		untouched("after deleting through a planted link")
	})

	t.Run("host mounts of the share", func(t *testing.T) {
		// A volume with a submount, bound read-only: as under runc, ro
		// makes the bind read-only and leaves its submount as it is,
		// rro makes the submount read-only too, on the host side as
		// well (the guest's root cannot undo it); every host mount of
		// the share is nosuid, nodev (a setuid binary or device node
		// the guest makes there is inert on the host).
		vol := filepath.Join(dir, "rovol")
		sub := filepath.Join(vol, "sub")
		os.MkdirAll(sub, 0o755)
		if err := syscall.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		defer syscall.Unmount(sub, syscall.MNT_DETACH)
		touch := func(id, path string) bool {
			r := s.ctr(nil, "task", "exec", "--exec-id", "w"+strings.ReplaceAll(path, "/", ""), id, "touch", path)
			return r.code == 0
		}
		ro, rro := s.id(podvm), s.id(podvm)
		for id, opts := range map[string]string{ro: "rbind:ro", rro: "rbind:rro"} {
			if r := member(id, "--mount", "type=bind,src="+vol+",dst=/data,options="+opts); r.code != 0 {
				t.Fatalf("member with a %s volume: %+v", opts, r)
			}
		}
		if touch(ro, "/data/x") || !touch(ro, "/data/sub/x") {
			t.Errorf("ro volume: the bind must be read-only and its submount writable, as under runc")
		}
		if touch(rro, "/data/y") || touch(rro, "/data/sub/y") {
			t.Errorf("rro volume: wrote to it or to its submount")
		}
		if entries, _ := os.ReadDir(sub); len(entries) != 1 || entries[0].Name() != "x" {
			t.Errorf("the volume's submount holds %v, want only what the ro container wrote", entries)
		}
		for _, line := range mountinfoUnder(stateDir) {
			if !strings.Contains(line, "nosuid") || !strings.Contains(line, "nodev") {
				t.Errorf("host mount of the share without nosuid,nodev: %s", line)
			}
			f := strings.Fields(line)
			if strings.Contains(f[4], "/"+rro+"/mounts/") && !strings.HasPrefix(f[5], "ro") {
				t.Errorf("a mount of an rro bind is writable on the host: %s", line)
			}
		}
		st, err := os.Stat(filepath.Join(stateDir, "sandboxes", pod))
		if err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("sandbox state directory mode: %v, %v; want 0700", st.Mode().Perm(), err)
		}
	})
}

// mountinfoUnder lists /proc/self/mountinfo lines of mount points below
// dir.
func mountinfoUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 5 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, l)
		}
	}
	return out
}
