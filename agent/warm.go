package agent

import (
	"context"
	"encoding/json"
	"net"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// warmUp runs, in a VM about to be saved as a template, the code paths of
// a pod's first requests whose first run builds lazily made state: the
// protobuf coders of the agent's messages, ttrpc's server side of a
// connection, encoding/json's field tables of the OCI spec and
// libcontainer's conversion of it. What they build is in the template's
// memory, so no restored VM builds it again on the clock of a pod's start.
// Nothing here touches the guest beyond the agent's own memory.
func warmUp(srv *ttrpc.Server) {
	t0 := time.Now()
	warmMessages()
	t1 := time.Now()
	warmServer(srv)
	t2 := time.Now()
	warmSpec()
	logf(levelDebug, "template: warmed up (protobuf %v, ttrpc %v, spec %v)", t1.Sub(t0), t2.Sub(t1), time.Since(t2))
}

// warmMessages builds the protobuf coders of every message the agent
// links, not only its API's: ttrpc's envelope, google.protobuf.Empty (the
// answer of many calls; an exec's is its first use after a create) and
// google.rpc.Status (every error answer) build theirs on first use too.
// It returns the messages' names.
func warmMessages() []protoreflect.FullName {
	var names []protoreflect.FullName
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		m := mt.New().Interface()
		if b, err := proto.Marshal(m); err == nil {
			_ = proto.Unmarshal(b, m)
		}
		names = append(names, mt.Descriptor().FullName())
		return true
	})
	return names
}

// warmServer makes calls to srv over an in-memory connection.
func warmServer(srv *ttrpc.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	host, guest := net.Pipe()
	l := &pipeListener{conn: make(chan net.Conn, 1), closed: make(chan struct{})}
	l.conn <- guest
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ctx, l)
	}()
	client := ttrpc.NewClient(host)
	if _, err := agentapi.NewAgentClient(client).Health(ctx, &agentapi.HealthRequest{}); err != nil {
		logf(levelDebug, "template warm-up: health: %v", err)
	}
	client.Close()
	l.Close()
	<-served
}

// warmSpec decodes and converts a spec shaped as containerd's default.
func warmSpec() {
	b, err := json.Marshal(typicalSpec())
	if err != nil {
		return
	}
	spec, err := decodeSpec(b)
	if err != nil {
		return
	}
	cfg, err := libcontainerConfig("warm-up", spec)
	if err != nil {
		logf(levelDebug, "template warm-up: spec: %v", err)
		return
	}
	if lp, err := newProcess(spec.Process, true); err == nil {
		_ = cinitUnsupported(cfg, lp)
	}
}

// typicalSpec is a container's spec as containerd's defaults make it.
func typicalSpec() *specs.Spec {
	caps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}
	limit := int64(64 << 20)
	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args: []string{"sh"}, Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, Cwd: "/",
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: "/run/podvm/warm-up/rootfs"},
		Hostname: "warm-up",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/etc/hosts", Type: "bind", Source: "/run/podvm/warm-up/hosts", Options: []string{"rbind", "ro"}},
		},
		Linux: &specs.Linux{
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
				Memory:  &specs.LinuxMemory{Limit: &limit},
			},
			Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace}, {Type: specs.NetworkNamespace}},
			MaskedPaths:   []string{"/proc/acpi", "/proc/kcore", "/proc/keys", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/sys"},
		},
	}
}

// pipeListener hands out one in-memory connection.
type pipeListener struct {
	conn   chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conn:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "warm-up" }
