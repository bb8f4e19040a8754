package sandbox

import (
	"time"

	"github.com/containerd/log"

	"github.com/podvm/podvm/metrics"
)

// phases times the steps of a start (a pod's VM, a container's create), so
// that every start says in the log, and in podvm_start_phase_seconds,
// where its time went.
type phases struct {
	last   time.Time
	fields log.Fields
	m      *metrics.Shim
}

func newPhases(m *metrics.Shim) *phases {
	return &phases{last: time.Now(), fields: log.Fields{}, m: m}
}

// mark ends the phase called name: the time since the previous mark.
func (p *phases) mark(name string) {
	now := time.Now()
	p.add(name, now.Sub(p.last))
	p.last = now
}

// add records a phase measured elsewhere; it does not move the mark.
func (p *phases) add(name string, d time.Duration) {
	if d <= 0 {
		return
	}
	p.fields[name] = d.Round(time.Microsecond).String()
	p.m.Phase(name, d)
}
