package agent

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// remountRoot makes / an ordinary mount. The initramfs root cannot be
// pivot_root'ed away from (EINVAL), and libcontainer pivot_roots into every
// container; a recursive bind of / moved over / and chroot'ed into can.
func remountRoot() error {
	const dir = "/.root"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("/", dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind / on %s: %w", dir, err)
	}
	if err := unix.Chdir(dir); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s over /: %w", dir, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}

// storages mounts what containers share with the host (the 9p or
// virtio-fs share), once each, whoever asks first.
type storages struct {
	mu      sync.Mutex
	mounted map[string]bool
}

func (s *storages) mount(st *agentapi.Storage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mounted == nil {
		s.mounted = make(map[string]bool)
	}
	if s.mounted[st.Target] {
		return nil
	}
	if !strings.HasPrefix(st.Target, "/run/") {
		return fmt.Errorf("storage target %q is outside /run", st.Target)
	}
	if err := os.MkdirAll(st.Target, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(st.Source, st.Target, st.Fstype, 0, strings.Join(st.Options, ",")); err != nil {
		return fmt.Errorf("mount %s %s on %s (%s): %w", st.Fstype, st.Source, st.Target, strings.Join(st.Options, ","), err)
	}
	s.mounted[st.Target] = true
	logf(levelDebug, "mounted %s %s on %s", st.Fstype, st.Source, st.Target)
	return nil
}
