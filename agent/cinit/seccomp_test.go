//go:build cgo && seccomp

package cinit

import (
	"testing"

	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestSeccompProgram(t *testing.T) {
	errno := uint(unix.ENOSYS)
	s := &configs.Seccomp{
		DefaultAction: configs.Errno,
		Architectures: []string{"amd64"},
		Syscalls: []*configs.Syscall{
			{Name: "read", Action: configs.Allow},
			{Name: "clone3", Action: configs.Errno, ErrnoRet: &errno},
			{Name: "personality", Action: configs.Allow, Args: []*configs.Arg{{Index: 0, Value: 0, Op: configs.EqualTo}, {Index: 0, Value: 8, Op: configs.EqualTo}}},
			{Name: "no_such_syscall", Action: configs.Allow},
		},
	}
	if err := seccompSupported(s); err != nil {
		t.Fatal(err)
	}
	prog, err := seccompProgram(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(prog) == 0 || len(prog)%8 != 0 {
		t.Fatalf("a BPF program of %d bytes", len(prog))
	}
	s.Flags = []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog, specs.LinuxSeccompFlagSpecAllow}
	if flags, err := seccompFlags(s); err != nil || flags != unix.SECCOMP_FILTER_FLAG_LOG|unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW {
		t.Errorf("flags %#x, %v", flags, err)
	}
	s.Flags = []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagWaitKillableRecv}
	if seccompSupported(s) == nil {
		t.Error("a filter flag for a listener was taken")
	}
}
