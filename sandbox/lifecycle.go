package sandbox

import "fmt"

// phase is where a pod's VM is in its life. Every change of phase goes
// through to, which refuses the transitions the table does not list: the
// whole lifecycle is here.
type phase int

const (
	// phaseNew: no VM yet; the configuration may still change.
	phaseNew phase = iota
	// phaseBooting: the network and the VM are coming up.
	phaseBooting
	// phaseRunning: the VM's agent answers; containers can be created.
	phaseRunning
	// phaseExited: the VM ended without being asked to (killed, crashed,
	// or killed by the host because its agent stopped answering); its
	// processes are reported killed, and only stopping is left.
	phaseExited
	// phaseStopping: the VM, the network and the files are being
	// removed.
	phaseStopping
	// phaseStopped: nothing is left; the pod never boots again.
	phaseStopped
)

var phaseNames = map[phase]string{
	phaseNew: "new", phaseBooting: "booting", phaseRunning: "running",
	phaseExited: "exited", phaseStopping: "stopping", phaseStopped: "stopped",
}

func (p phase) String() string { return phaseNames[p] }

// transitions lists where each phase may go. A failed boot goes back to
// new (the next container may try again); stopping is reachable from every
// phase but booting, whose end a stop waits for.
var transitions = map[phase][]phase{
	phaseNew:      {phaseBooting, phaseStopping},
	phaseBooting:  {phaseRunning, phaseNew},
	phaseRunning:  {phaseExited, phaseStopping},
	phaseExited:   {phaseStopping},
	phaseStopping: {phaseStopped},
	phaseStopped:  nil,
}

// to returns the next phase, or an error if the lifecycle does not allow
// the change.
func (p phase) to(next phase) (phase, error) {
	for _, allowed := range transitions[p] {
		if allowed == next {
			return next, nil
		}
	}
	return p, fmt.Errorf("a pod cannot go from %v to %v", p, next)
}
