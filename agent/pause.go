package agent

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// PauseName is the name the agent answers to as a pod's infra process:
// the host bind-mounts the agent's binary at /PauseName in the infra
// container, which holds the pod's PID, IPC and UTS namespaces when the
// Sandbox API starts a pod without a pause container.
const PauseName = "pause"

// Pause is what Kubernetes' pause does: nothing, as PID 1 of the pod's PID
// namespace it reaps the orphans the pod's processes leave, and it ends on
// SIGINT or SIGTERM.
func Pause() {
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, unix.SIGINT, unix.SIGTERM, unix.SIGCHLD)
	for s := range sig {
		if s != unix.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
