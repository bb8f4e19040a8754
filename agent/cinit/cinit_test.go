package cinit

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

func baseConfig() *configs.Config {
	return &configs.Config{
		Rootfs: "/run/podvm/shared/c1/rootfs",
		Namespaces: configs.Namespaces{
			{Type: configs.NEWNS}, {Type: configs.NEWPID}, {Type: configs.NEWUTS},
			{Type: configs.NEWIPC, Path: "/proc/7/ns/ipc"},
		},
		Mounts: []*configs.Mount{{Source: "proc", Destination: "/proc", Device: "proc"}},
	}
}

// records decodes what encode wrote, as cinit.c reads it.
func records(t *testing.T, b []byte) map[byte][][]string {
	t.Helper()
	if n := binary.LittleEndian.Uint32(b); int(n) != len(b)-4 {
		t.Fatalf("length %d, have %d bytes", n, len(b)-4)
	}
	out := map[byte][][]string{}
	for b = b[4:]; len(b) >= 5; {
		tag, n := b[0], binary.LittleEndian.Uint32(b[1:5])
		data := string(b[5 : 5+n])
		if !strings.HasSuffix(data, "\x00") {
			t.Fatalf("record %c does not end in NUL", tag)
		}
		out[tag] = append(out[tag], strings.Split(strings.TrimSuffix(data, "\x00"), "\x00"))
		b = b[5+n:]
	}
	return out
}

func TestEncode(t *testing.T) {
	cfg := baseConfig()
	cfg.Hostname = "box"
	stdout, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	defer w.Close()
	p := &Process{Args: []string{"sh", "-c", "true"}, Env: []string{"PATH=/bin"}, UID: 1000, GID: 1000, Groups: []uint32{10, 20},
		Capabilities: &configs.Capabilities{Bounding: []string{"CAP_CHOWN", "CAP_NO_SUCH"}}, Stdout: w}
	b, files, err := encode("c1", cfg, p, SpareFlags[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0] != w {
		t.Errorf("files %v, want stdout only", files)
	}
	r := records(t, b)
	check := func(tag byte, want ...string) {
		t.Helper()
		if got := r[tag]; len(got) == 0 || strings.Join(got[0], "|") != strings.Join(want, "|") {
			t.Errorf("record %c = %q, want %q", tag, got, want)
		}
	}
	check(tagRoot, cfg.Rootfs)
	check(tagHostname, "box")
	check(tagUser, "1000", "1000", "10,20")
	check(tagFiles, "0100")
	check(tagCaps, "1", "0", "0", "0", "0") // CAP_CHOWN is bit 0; unknown names are left out
	if got := r[tagArg]; len(got) != 3 || got[2][0] != "true" {
		t.Errorf("args %q", got)
	}
	// The spare was cloned with a network namespace the spec shares with
	// the agent: it joins the agent's again; the IPC namespace is joined
	// by path.
	joins := map[string]string{}
	for _, j := range r[tagJoin] {
		joins[j[0]] = j[1]
	}
	if joins[string(configs.NEWIPC)] != "/proc/7/ns/ipc" || !strings.HasSuffix(joins[string(configs.NEWNET)], "/ns/net") {
		t.Errorf("joins %v", joins)
	}
	if _, ok := r[tagEnd]; !ok {
		t.Error("no end record")
	}
	p.Env = append(p.Env, "BAD=a\x00b")
	if _, _, err := encode("c1", cfg, p, SpareFlags[0]); err == nil {
		t.Error("a NUL byte in the environment was encoded")
	}
}

// TestEncodeExec: a process exec'd into a container joins each of the
// init's namespaces in libcontainer's order (mount after PID: the paths are
// in the agent's /proc), mounts nothing, and takes the process's own
// rlimits over the container's.
func TestEncodeExec(t *testing.T) {
	cfg := baseConfig()
	cfg.Rlimits = []configs.Rlimit{{Type: unix.RLIMIT_NOFILE, Soft: 1, Hard: 1}}
	p := &Process{Args: []string{"true"}, Rlimits: []configs.Rlimit{{Type: unix.RLIMIT_NOFILE, Soft: 2, Hard: 2}}}
	b, files, err := encodeExec("c1", 42, cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 0 {
		t.Errorf("files %v, want none", files)
	}
	r := records(t, b)
	var joins []string
	for _, j := range r[tagJoin] {
		joins = append(joins, j[0]+"="+j[1])
	}
	want := "NEWIPC=/proc/42/ns/ipc NEWUTS=/proc/42/ns/uts NEWPID=/proc/42/ns/pid NEWNS=/proc/42/ns/mnt"
	if got := strings.Join(joins, " "); got != want {
		t.Errorf("joins %s, want %s", got, want)
	}
	for _, tag := range []byte{tagRoot, tagMount, tagSetupDev, tagHostname, tagLoopback, tagNewCgroup} {
		if _, ok := r[tag]; ok {
			t.Errorf("record %c in an exec's config", tag)
		}
	}
	if _, ok := r[tagExec]; !ok {
		t.Error("no exec record")
	}
	if got := r[tagRlimit]; len(got) != 1 || got[0][1] != "2" {
		t.Errorf("rlimits %q, want the process's only", got)
	}
}

func TestUnsupported(t *testing.T) {
	if err := Unsupported(baseConfig()); err != nil {
		t.Fatalf("the usual config: %v", err)
	}
	for name, change := range map[string]func(*configs.Config){
		"seccomp notify": func(c *configs.Config) { c.Seccomp = &configs.Seccomp{DefaultAction: configs.Notify} },
		"user":           func(c *configs.Config) { c.UIDMappings = []configs.IDMap{{Size: 1}} },
		"no mount ns":    func(c *configs.Config) { c.Namespaces = c.Namespaces[1:] },
		"proc mount": func(c *configs.Config) {
			c.Mounts = append(c.Mounts, &configs.Mount{Destination: "/proc/sys", Device: "bind"})
		},
		"proc as tmpfs": func(c *configs.Config) { c.Mounts[0].Device = "tmpfs" },
		"shared root":   func(c *configs.Config) { c.RootPropagation = unix.MS_SHARED | unix.MS_REC },
	} {
		cfg := baseConfig()
		change(cfg)
		if Unsupported(cfg) == nil {
			t.Errorf("%s: cinit would take it", name)
		}
	}
}

func TestFits(t *testing.T) {
	cfg := baseConfig()
	if !Fits(SpareFlags[0], cfg) || Fits(SpareFlags[1], cfg) {
		t.Error("a container with a PID namespace of its own fits the wrong spare")
	}
	cfg.Namespaces[1].Path = "/proc/7/ns/pid"
	if Fits(SpareFlags[0], cfg) || Fits(SpareFlags[1], cfg) {
		t.Error("a container joining a PID namespace, with a UTS namespace of its own, fits a spare")
	}
	cfg.Namespaces[2].Path = "/proc/7/ns/uts"
	if Fits(SpareFlags[0], cfg) || !Fits(SpareFlags[1], cfg) {
		t.Error("a CRI container (joining its pod's namespaces) fits the wrong spare")
	}
	if err := Unsupported(cfg); err != nil {
		t.Errorf("joining a PID namespace: %v", err)
	}
	cfg.Namespaces = configs.Namespaces{{Type: configs.NEWNS}}
	if Fits(SpareFlags[0], cfg) || !Fits(SpareFlags[1], cfg) {
		t.Error("a container in the agent's PID namespace fits the wrong spare")
	}
}
