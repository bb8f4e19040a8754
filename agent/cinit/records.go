package cinit

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/moby/sys/capability"
	"github.com/opencontainers/runc/libcontainer/configs"
)

// Record tags; cinit.h has the same.
const (
	tagRoot        = 'r'
	tagJoin        = 'n'
	tagMount       = 'm'
	tagDevice      = 'd'
	tagMask        = 'M'
	tagReadonly    = 'R'
	tagHostname    = 'h'
	tagDomain      = 'D'
	tagSysctl      = 's'
	tagRlimit      = 'l'
	tagCaps        = 'c'
	tagUser        = 'u'
	tagCwd         = 'w'
	tagEnv         = 'e'
	tagArg         = 'a'
	tagNoNewPrivs  = 'N'
	tagReadonlyFS  = 'o'
	tagPropagation = 'p'
	tagUmask       = 'U'
	tagTerminal    = 't'
	tagKeyring     = 'k'
	tagLoopback    = 'L'
	tagSetupDev    = 'v'
	tagFiles       = 'f'
	tagNewCgroup   = 'C'
	tagSeccomp     = 'S'
	tagExec        = 'x'
	tagEnd         = 'Z'
)

type encoder struct{ b []byte }

func (e *encoder) add(tag byte, fields ...string) error {
	var n int
	for _, f := range fields {
		if strings.IndexByte(f, 0) >= 0 {
			return fmt.Errorf("NUL byte in %q", f)
		}
		n += len(f) + 1
	}
	e.b = append(e.b, tag)
	e.b = binary.LittleEndian.AppendUint32(e.b, uint32(n))
	for _, f := range fields {
		e.b = append(append(e.b, f...), 0)
	}
	return nil
}

func u64(v uint64) string { return strconv.FormatUint(v, 10) }

// agentNamespaces are the namespaces an init may have been cloned into
// that a container can instead share with the agent.
var agentNamespaces = []configs.NamespaceType{configs.NEWNET, configs.NEWIPC, configs.NEWUTS}

// encode writes the records cinit.c reads, for an init cloned into the
// namespaces flags, and returns the descriptors that go with them.
func encode(id string, cfg *configs.Config, p *Process, flags uintptr) ([]byte, []*os.File, error) {
	e := &encoder{}
	add := e.add
	errs := []error{add(tagRoot, cfg.Rootfs)}
	if !cfg.NoNewKeyring {
		errs = append(errs, add(tagKeyring, id))
	}
	for _, ns := range cfg.Namespaces {
		switch {
		case ns.Path != "":
			errs = append(errs, add(tagJoin, string(ns.Type), ns.Path))
		case ns.Type == configs.NEWCGROUP:
			errs = append(errs, add(tagNewCgroup, ""))
		}
	}
	for _, t := range agentNamespaces {
		ns := configs.Namespace{Type: t}
		if flags&uintptr(ns.Syscall()) != 0 && !cfg.Namespaces.Contains(t) {
			errs = append(errs, add(tagJoin, string(t), ns.GetPath(os.Getpid())))
		}
	}
	if len(cfg.Networks) > 0 {
		errs = append(errs, add(tagLoopback, ""))
	}
	if cfg.RootPropagation != 0 {
		errs = append(errs, add(tagPropagation, u64(uint64(cfg.RootPropagation))))
	}
	setupDev := true
	for _, m := range cfg.Mounts {
		var prop int
		for _, f := range m.PropagationFlags {
			prop |= f
		}
		if m.IsBind() && path.Clean(m.Destination) == "/dev" {
			setupDev = false
		}
		errs = append(errs, add(tagMount, m.Source, m.Destination, m.Device,
			u64(uint64(m.Flags)), u64(uint64(prop)), m.Data, u64(uint64(m.ClearedFlags))))
	}
	if setupDev {
		errs = append(errs, add(tagSetupDev, ""))
		for _, d := range cfg.Devices {
			errs = append(errs, add(tagDevice, d.Path, string(rune(d.Type)),
				strconv.FormatInt(d.Major, 10), strconv.FormatInt(d.Minor, 10),
				u64(uint64(d.FileMode)), u64(uint64(d.Uid)), u64(uint64(d.Gid))))
		}
	}
	for _, m := range cfg.MaskPaths {
		errs = append(errs, add(tagMask, m))
	}
	for _, r := range cfg.ReadonlyPaths {
		errs = append(errs, add(tagReadonly, r))
	}
	hostname := cfg.Hostname
	if hostname == "" && cfg.Namespaces.Contains(configs.NEWUTS) && cfg.Namespaces.PathOf(configs.NEWUTS) == "" {
		// A new UTS namespace starts with the guest's name, as under
		// runc; an init spawned earlier holds an older copy.
		hostname, _ = os.Hostname()
	}
	if hostname != "" {
		errs = append(errs, add(tagHostname, hostname))
	}
	if cfg.Domainname != "" {
		errs = append(errs, add(tagDomain, cfg.Domainname))
	}
	for k, v := range cfg.Sysctl {
		errs = append(errs, add(tagSysctl, k, v))
	}
	if cfg.Readonlyfs {
		errs = append(errs, add(tagReadonlyFS, ""))
	}
	errs = append(errs, e.process(cfg, p, append(append([]configs.Rlimit{}, cfg.Rlimits...), p.Rlimits...))...)
	config, err := e.finish(errs)
	files, _ := p.files()
	return config, files, err
}

// finish ends the records and frames them with their length, or returns
// what went wrong writing them.
func (e *encoder) finish(errs []error) ([]byte, error) {
	errs = append(errs, e.add(tagEnd, ""))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return append(binary.LittleEndian.AppendUint32(nil, uint32(len(e.b))), e.b...), nil
}

// process writes the records of the process's own settings, which a
// container's init and a process exec'd into it share.
func (e *encoder) process(cfg *configs.Config, p *Process, rlimits []configs.Rlimit) []error {
	add := e.add
	var errs []error
	if cfg.Umask != nil {
		errs = append(errs, add(tagUmask, u64(uint64(*cfg.Umask))))
	}
	for _, rl := range rlimits {
		errs = append(errs, add(tagRlimit, strconv.Itoa(rl.Type), u64(rl.Soft), u64(rl.Hard)))
	}
	if p.NoNewPrivileges {
		errs = append(errs, add(tagNoNewPrivs, ""))
	}
	if cfg.Seccomp != nil {
		prog, err := seccompProgram(cfg.Seccomp)
		if err != nil {
			return []error{err}
		}
		flags, err := seccompFlags(cfg.Seccomp)
		if err != nil {
			return []error{err}
		}
		errs = append(errs, add(tagSeccomp, u64(uint64(flags)), hex.EncodeToString(prog)))
	}
	groups := make([]string, len(p.Groups))
	for i, g := range p.Groups {
		groups[i] = u64(uint64(g))
	}
	errs = append(errs, add(tagUser, u64(uint64(p.UID)), u64(uint64(p.GID)), strings.Join(groups, ",")))
	if c := p.Capabilities; c != nil {
		errs = append(errs, add(tagCaps, u64(capMask(c.Bounding)), u64(capMask(c.Effective)),
			u64(capMask(c.Inheritable)), u64(capMask(c.Permitted)), u64(capMask(c.Ambient))))
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	errs = append(errs, add(tagCwd, cwd))
	_, sent := p.files()
	errs = append(errs, add(tagFiles, sent))
	if p.ConsoleSocket != nil {
		errs = append(errs, add(tagTerminal, u64(uint64(p.ConsoleWidth)), u64(uint64(p.ConsoleHeight))))
	}
	for _, a := range p.Args {
		errs = append(errs, add(tagArg, a))
	}
	for _, v := range p.Env {
		errs = append(errs, add(tagEnv, v))
	}
	return errs
}

// files are the descriptors that go with the config, and the files
// record that names them: one character per slot (stdin, stdout, stderr,
// console socket), '1' where one is sent.
func (p *Process) files() ([]*os.File, string) {
	var files []*os.File
	sent := []byte("0000")
	for k, f := range []*os.File{p.Stdin, p.Stdout, p.Stderr, p.ConsoleSocket} {
		if f != nil {
			files = append(files, f)
			sent[k] = '1'
		}
	}
	return files, string(sent)
}

// execNamespaces are the kinds of namespace a process exec'd into a
// container joins, in libcontainer's order (configs.NamespaceTypes).
var execNamespaces = []configs.NamespaceType{configs.NEWIPC, configs.NEWUTS, configs.NEWNET, configs.NEWPID, configs.NEWNS, configs.NEWCGROUP}

// encodeExec writes the records for a process exec'd into the running
// container cfg whose init is initPid: it joins each of the init's
// namespaces (those the container shares with the agent it is in
// already), as runc exec does from its state file.
func encodeExec(id string, initPid int, cfg *configs.Config, p *Process) ([]byte, []*os.File, error) {
	e := &encoder{}
	errs := []error{e.add(tagExec, "")}
	if !cfg.NoNewKeyring {
		errs = append(errs, e.add(tagKeyring, id))
	}
	for _, t := range execNamespaces {
		if cfg.Namespaces.Contains(t) {
			ns := configs.Namespace{Type: t}
			errs = append(errs, e.add(tagJoin, string(t), ns.GetPath(initPid)))
		}
	}
	// libcontainer: the process's rlimits when it has any, else the
	// container's.
	rlimits := p.Rlimits
	if len(rlimits) == 0 {
		rlimits = cfg.Rlimits
	}
	errs = append(errs, e.process(cfg, p, rlimits)...)
	config, err := e.finish(errs)
	files, _ := p.files()
	return config, files, err
}

// capNumbers maps capability names to numbers; made on first use, not
// at every agent start.
var capNumbers = sync.OnceValue(func() map[string]uint {
	m := map[string]uint{}
	for _, c := range capability.ListKnown() {
		m["CAP_"+strings.ToUpper(c.String())] = uint(c)
	}
	return m
})

// capMask turns capability names into a bit mask; names this kernel does
// not know are left out, as runc leaves them out (with a warning).
func capMask(names []string) uint64 {
	var m uint64
	for _, n := range names {
		if c, ok := capNumbers()[n]; ok && c < 64 {
			m |= 1 << c
		}
	}
	return m
}
