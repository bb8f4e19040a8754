package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Census is what a test could leave behind: QEMU processes, children of the
// test not yet reaped, the test's own sockets and pipes, and podvm's
// temporary files.
type Census struct {
	QEMU        []string // "pid cmdline" of every QEMU on the host
	Shims       []string // "pid cmdline" of every podvm shim
	Virtiofsd   []string // "pid cmdline" of every virtio-fs daemon
	NetNS       []string // entries of /var/run/netns
	ShimSockets []string // shim sockets in /run/containerd/s
	Mounts      []string // mounts below /run/podvm and the temp directory
	Zombies     []int    // unreaped children of this process
	Sockets     int      // sockets this process holds
	Pipes       []string // pipes this process holds ("pipe:[inode]")
	Temp        []string // podvm-* entries in the temp directory
}

// TakeCensus counts now.
func TakeCensus() Census {
	var c Census
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			desc := fmt.Sprintf("%d %s", pid, strings.ReplaceAll(string(cmd), "\x00", " "))
			switch base := filepath.Base(exe); {
			case strings.HasPrefix(base, "qemu-system"):
				c.QEMU = append(c.QEMU, desc)
			case base == "containerd-shim-podvm-v2":
				c.Shims = append(c.Shims, desc)
			case base == "virtiofsd":
				c.Virtiofsd = append(c.Virtiofsd, desc)
			}
		}
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			// Fields after the command's closing parenthesis: state ppid ...
			if i := strings.LastIndexByte(string(stat), ')'); i > 0 {
				f := strings.Fields(string(stat[i+1:]))
				if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(self) {
					c.Zombies = append(c.Zombies, pid)
				}
			}
		}
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		target, _ := os.Readlink("/proc/self/fd/" + fd.Name())
		switch {
		case strings.HasPrefix(target, "socket:"):
			c.Sockets++
		case strings.HasPrefix(target, "pipe:"):
			c.Pipes = append(c.Pipes, target)
		}
	}
	for _, dir := range []string{"/var/run/netns", "/run/containerd/s"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if dir == "/var/run/netns" {
				c.NetNS = append(c.NetNS, e.Name())
			} else {
				c.ShimSockets = append(c.ShimSockets, e.Name())
			}
		}
	}
	c.Mounts = append(MountsUnder("/run/podvm"), MountsUnder(os.TempDir())...)
	tmp, _ := os.ReadDir(os.TempDir())
	for _, e := range tmp {
		if strings.HasPrefix(e.Name(), "podvm-") && e.Name() != "podvm-test-state" {
			c.Temp = append(c.Temp, filepath.Join(os.TempDir(), e.Name()))
		}
	}
	return c
}

// QEMUPid is the PID of the QEMU of the VM (or sandbox) called id, 0 if
// there is none.
func (c Census) QEMUPid(id string) int { return pidIn(c.QEMU, " -name "+id+" ") }

// ShimPid is the PID of the podvm shim of sandbox id, 0 if there is none.
func (c Census) ShimPid(id string) int { return pidIn(c.Shims, " -id "+id+" ") }

// VirtiofsdPid is the PID of the virtio-fs daemon serving dir, 0 if there
// is none.
func (c Census) VirtiofsdPid(dir string) int { return pidIn(c.Virtiofsd, " source="+dir+" ") }

// pidIn returns the PID of the "pid cmdline" entry whose command line holds
// needle.
func pidIn(entries []string, needle string) int {
	for _, e := range entries {
		if strings.Contains(e+" ", needle) {
			pid, _ := strconv.Atoi(strings.Fields(e)[0])
			return pid
		}
	}
	return 0
}

// Leaks lists what after has that c had not.
func (c Census) Leaks(after Census) []string {
	var leaks []string
	for _, q := range after.QEMU {
		if !slices.Contains(c.QEMU, q) {
			leaks = append(leaks, "QEMU still running: "+q)
		}
	}
	for _, q := range after.Shims {
		if !slices.Contains(c.Shims, q) {
			leaks = append(leaks, "shim still running: "+q)
		}
	}
	for _, q := range after.Virtiofsd {
		if !slices.Contains(c.Virtiofsd, q) {
			leaks = append(leaks, "virtiofsd still running: "+q)
		}
	}
	for _, n := range after.NetNS {
		if !slices.Contains(c.NetNS, n) {
			leaks = append(leaks, "network namespace left: "+n)
		}
	}
	for _, n := range after.ShimSockets {
		if !slices.Contains(c.ShimSockets, n) {
			leaks = append(leaks, "shim socket left: /run/containerd/s/"+n)
		}
	}
	for _, m := range after.Mounts {
		if !slices.Contains(c.Mounts, m) {
			leaks = append(leaks, "mount left: "+m)
		}
	}
	for _, z := range after.Zombies {
		if !slices.Contains(c.Zombies, z) {
			leaks = append(leaks, fmt.Sprintf("unreaped child %d", z))
		}
	}
	if after.Sockets > c.Sockets {
		leaks = append(leaks, fmt.Sprintf("%d socket(s) left open", after.Sockets-c.Sockets))
	}
	if len(after.Pipes) > len(c.Pipes) {
		var added []string
		for _, p := range after.Pipes {
			if !slices.Contains(c.Pipes, p) {
				added = append(added, p+" (also held by: "+pipeHolders(p)+")")
			}
		}
		leaks = append(leaks, fmt.Sprintf("%d pipe(s) left open: %s", len(after.Pipes)-len(c.Pipes), strings.Join(added, ", ")))
	}
	for _, p := range after.Temp {
		if !slices.Contains(c.Temp, p) {
			leaks = append(leaks, "temporary file left: "+p)
		}
	}
	return leaks
}

// pipeHolders names the other processes holding a pipe, to tell whose it
// is when one is left.
func pipeHolders(pipe string) string {
	var who []string
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	self := "/proc/" + strconv.Itoa(os.Getpid()) + "/"
	for _, fd := range fds {
		if strings.HasPrefix(fd, self) {
			continue
		}
		if l, _ := os.Readlink(fd); l == pipe {
			proc := filepath.Dir(filepath.Dir(fd))
			comm, _ := os.ReadFile(filepath.Join(proc, "comm"))
			who = append(who, filepath.Base(proc)+" "+strings.TrimSpace(string(comm)))
		}
	}
	if len(who) == 0 {
		return "nobody"
	}
	return strings.Join(who, "; ")
}

// WatchLeaks takes a census now and, when the test ends (after the
// cleanups registered later, which run first), fails the test if anything
// was left behind. Closing is asynchronous in places, so it waits a little
// for the count to settle.
func WatchLeaks(t testing.TB) {
	t.Helper()
	before := TakeCensus()
	t.Cleanup(func() {
		var leaks []string
		for deadline := time.Now().Add(3 * time.Second); ; {
			leaks = before.Leaks(TakeCensus())
			if len(leaks) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		for _, l := range leaks {
			t.Errorf("leak: %s", l)
		}
	})
}
