//go:build cgo && seccomp

package cinit

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// seccompSupported says why cinit cannot install cfg's filter, or nil. A
// filter that hands syscalls to a listener, or that needs flags at load
// time, goes to libcontainer.
func seccompSupported(s *configs.Seccomp) error {
	if s == nil {
		return nil
	}
	if s.DefaultAction == configs.Notify || s.ListenerPath != "" {
		return errors.New("seccomp notify")
	}
	if _, err := seccompFlags(s); err != nil {
		return err
	}
	for _, c := range s.Syscalls {
		if c != nil && c.Action == configs.Notify {
			return errors.New("seccomp notify")
		}
	}
	return nil
}

// seccompFlags are the flags cinit passes to seccomp(2) with the program.
// TSYNC means nothing to a process of one thread.
func seccompFlags(s *configs.Seccomp) (uint, error) {
	var flags uint
	for _, f := range s.Flags {
		switch f {
		case specs.LinuxSeccompFlagLog:
			flags |= unix.SECCOMP_FILTER_FLAG_LOG
		case specs.LinuxSeccompFlagSpecAllow:
			flags |= unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW
		case "SECCOMP_FILTER_FLAG_TSYNC":
		default:
			return 0, fmt.Errorf("seccomp flag %s", f)
		}
	}
	return flags, nil
}

// programs keeps the programs compiled in this VM: a pod's containers
// usually share one profile, and compiling containerd's default one costs
// a few hundred milliseconds under TCG.
var programs struct {
	sync.Mutex
	m map[[sha256.Size]byte][]byte
}

// maxPrograms bounds programs; a VM holds one pod.
const maxPrograms = 8

// seccompProgram compiles cfg's filter to the classic BPF program cinit
// loads, with libseccomp, as runc does (but without runc's patch that
// makes syscalls newer than the profile fail with ENOSYS).
func seccompProgram(s *configs.Seccomp) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	key := sha256.Sum256(b)
	programs.Lock()
	defer programs.Unlock()
	if prog, ok := programs.m[key]; ok {
		return prog, nil
	}
	prog, err := compileSeccomp(s)
	if err != nil {
		return nil, err
	}
	if programs.m == nil || len(programs.m) >= maxPrograms {
		programs.m = map[[sha256.Size]byte][]byte{}
	}
	programs.m[key] = prog
	return prog, nil
}

func compileSeccomp(s *configs.Seccomp) ([]byte, error) {
	def, err := seccompAction(s.DefaultAction, s.DefaultErrnoRet)
	if err != nil {
		return nil, fmt.Errorf("seccomp default action: %w", err)
	}
	filter, err := libseccomp.NewFilter(def)
	if err != nil {
		return nil, fmt.Errorf("seccomp filter: %w", err)
	}
	defer filter.Release()
	for _, a := range s.Architectures {
		arch, err := libseccomp.GetArchFromString(a)
		if err != nil {
			return nil, fmt.Errorf("seccomp architecture %s: %w", a, err)
		}
		if err := filter.AddArch(arch); err != nil {
			return nil, fmt.Errorf("seccomp architecture %s: %w", a, err)
		}
	}
	// no_new_privs is the process's own setting, not the filter's.
	if err := filter.SetNoNewPrivsBit(false); err != nil {
		return nil, err
	}
	if len(s.Syscalls) > 32 {
		_ = filter.SetOptimize(2)
	}
	for _, c := range s.Syscalls {
		if c == nil || c.Name == "" {
			return nil, errors.New("seccomp rule without a syscall")
		}
		if err := seccompRule(filter, c, def); err != nil {
			return nil, err
		}
	}
	fd, err := unix.MemfdCreate("seccomp", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("seccomp program: %w", err)
	}
	f := os.NewFile(uintptr(fd), "seccomp")
	defer f.Close()
	if err := filter.ExportBPF(f); err != nil {
		return nil, fmt.Errorf("export seccomp program: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

func seccompAction(a configs.Action, errno *uint) (libseccomp.ScmpAction, error) {
	code := func(act libseccomp.ScmpAction, def int16) libseccomp.ScmpAction {
		if errno != nil {
			return act.SetReturnCode(int16(*errno))
		}
		return act.SetReturnCode(def)
	}
	switch a {
	case configs.Kill, configs.KillThread:
		return libseccomp.ActKillThread, nil
	case configs.KillProcess:
		return libseccomp.ActKillProcess, nil
	case configs.Errno:
		return code(libseccomp.ActErrno, int16(unix.EPERM)), nil
	case configs.Trace:
		return code(libseccomp.ActTrace, int16(unix.EPERM)), nil
	case configs.Trap:
		return libseccomp.ActTrap, nil
	case configs.Allow:
		return libseccomp.ActAllow, nil
	case configs.Log:
		return libseccomp.ActLog, nil
	}
	return libseccomp.ActInvalid, fmt.Errorf("seccomp action %d", a)
}

var seccompOps = map[configs.Operator]libseccomp.ScmpCompareOp{
	configs.EqualTo: libseccomp.CompareEqual, configs.NotEqualTo: libseccomp.CompareNotEqual,
	configs.GreaterThan: libseccomp.CompareGreater, configs.GreaterThanOrEqualTo: libseccomp.CompareGreaterEqual,
	configs.LessThan: libseccomp.CompareLess, configs.LessThanOrEqualTo: libseccomp.CompareLessOrEqual,
	configs.MaskEqualTo: libseccomp.CompareMaskedEqual,
}

// seccompRule adds one syscall's rule. Conditions on distinct arguments
// make one rule (all must hold); several on the same argument make one
// rule each (any may hold), which is what runc does with such profiles.
func seccompRule(filter *libseccomp.ScmpFilter, c *configs.Syscall, def libseccomp.ScmpAction) error {
	act, err := seccompAction(c.Action, c.ErrnoRet)
	if err != nil {
		return fmt.Errorf("seccomp rule for %s: %w", c.Name, err)
	}
	if act == def {
		return nil
	}
	nr, err := libseccomp.GetSyscallFromName(c.Name)
	if err != nil {
		// Not a syscall of this kernel's: runc skips it too.
		return nil
	}
	if len(c.Args) == 0 {
		return filter.AddRule(nr, act)
	}
	var conds []libseccomp.ScmpCondition
	perArg := map[uint]int{}
	for _, a := range c.Args {
		if a == nil {
			return fmt.Errorf("seccomp rule for %s: empty condition", c.Name)
		}
		op, ok := seccompOps[a.Op]
		if !ok {
			return fmt.Errorf("seccomp rule for %s: operator %d", c.Name, a.Op)
		}
		cond, err := libseccomp.MakeCondition(a.Index, op, a.Value, a.ValueTwo)
		if err != nil {
			return fmt.Errorf("seccomp rule for %s: %w", c.Name, err)
		}
		conds = append(conds, cond)
		perArg[a.Index]++
	}
	for _, n := range perArg {
		if n > 1 {
			for _, cond := range conds {
				if err := filter.AddRuleConditional(nr, act, []libseccomp.ScmpCondition{cond}); err != nil {
					return fmt.Errorf("seccomp rule for %s: %w", c.Name, err)
				}
			}
			return nil
		}
	}
	if err := filter.AddRuleConditional(nr, act, conds); err != nil {
		return fmt.Errorf("seccomp rule for %s: %w", c.Name, err)
	}
	return nil
}
