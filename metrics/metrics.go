// Package metrics is what a podvm shim tells Prometheus about its sandbox
// (boot time, RPC latencies and errors, QEMU's and the guest's memory), the
// unix socket it serves that on, and the gathering of every shim's metrics
// on a node for one scrape.
package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// SocketName is the metrics socket's name in a sandbox's state directory.
const SocketName = "metrics.sock"

// Sandbox is what the metrics read from a sandbox when scraped.
type Sandbox interface {
	// QEMUPid is the VM's QEMU process, 0 before boot and after stop.
	QEMUPid() int
	// Containers counts the sandbox's containers.
	Containers() int
	// GuestMemory asks the guest agent for its memory.
	GuestMemory(ctx context.Context) (total, available uint64, err error)
}

// Shim holds one shim's metrics; every series carries the sandbox's ID.
type Shim struct {
	Registry *prometheus.Registry

	bootSeconds   prometheus.Gauge
	readySeconds  prometheus.Gauge
	vcpus         prometheus.Gauge
	memoryBytes   prometheus.Gauge
	bootFailures  prometheus.Counter
	agentDuration *prometheus.HistogramVec
	agentErrors   *prometheus.CounterVec
	taskDuration  *prometheus.HistogramVec
	taskErrors    *prometheus.CounterVec
	phaseDuration *prometheus.HistogramVec
}

// rpcBuckets span a local RPC under KVM (100 µs) to a slow exec under TCG
// (10 s).
var rpcBuckets = prometheus.ExponentialBuckets(0.0001, 4, 9)

// NewShim makes the metrics of the shim of sandbox id.
func NewShim(id string, sb Sandbox) *Shim {
	reg := prometheus.NewRegistry()
	f := prometheus.WrapRegistererWith(prometheus.Labels{"sandbox_id": id}, reg)
	m := &Shim{
		Registry: reg,
		bootSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "podvm_vm_boot_seconds",
			Help: "Seconds from QEMU's start to the guest agent's first answer."}),
		readySeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "podvm_guest_agent_ready_seconds",
			Help: "Seconds from the guest kernel's start to its agent serving, as the guest measured it."}),
		vcpus: prometheus.NewGauge(prometheus.GaugeOpts{Name: "podvm_vm_vcpus",
			Help: "vCPUs the VM has."}),
		memoryBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "podvm_vm_memory_bytes",
			Help: "Memory the VM was given."}),
		bootFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "podvm_vm_boot_failures_total",
			Help: "VM boots that failed."}),
		agentDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "podvm_agent_rpc_duration_seconds",
			Help: "Latency of the shim's RPCs to the guest agent.", Buckets: rpcBuckets}, []string{"method"}),
		agentErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "podvm_agent_rpc_errors_total",
			Help: "RPCs to the guest agent that failed."}, []string{"method"}),
		taskDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "podvm_task_rpc_duration_seconds",
			Help: "Latency of containerd's task API calls to the shim (Wait excluded).", Buckets: rpcBuckets}, []string{"method"}),
		taskErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "podvm_task_rpc_errors_total",
			Help: "containerd's task API calls the shim failed."}, []string{"method"}),
	}
	m.phaseDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "podvm_start_phase_seconds",
		Help:    "Where a pod's or container's start went: netns and TAPs, template, QEMU exec, restore, agent, guest network, rootfs, guest create, start.",
		Buckets: rpcBuckets}, []string{"phase"})
	f.MustRegister(m.phaseDuration, m.bootSeconds, m.readySeconds, m.vcpus, m.memoryBytes, m.bootFailures,
		m.agentDuration, m.agentErrors, m.taskDuration, m.taskErrors,
		&sandboxCollector{sb: sb},
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	return m
}

// Booted records a VM's boot.
func (m *Shim) Booted(boot, agentReady time.Duration, vcpus, memoryMiB int) {
	m.bootSeconds.Set(boot.Seconds())
	m.readySeconds.Set(agentReady.Seconds())
	m.vcpus.Set(float64(vcpus))
	m.memoryBytes.Set(float64(memoryMiB << 20))
}

// Phase records one phase of a start.
func (m *Shim) Phase(name string, d time.Duration) {
	if m == nil {
		return
	}
	m.phaseDuration.WithLabelValues(name).Observe(d.Seconds())
}

// Resized records the VM's size after a hot-plug.
func (m *Shim) Resized(vcpus, memoryMiB int) {
	m.vcpus.Set(float64(vcpus))
	m.memoryBytes.Set(float64(memoryMiB << 20))
}

// BootFailed counts a failed boot.
func (m *Shim) BootFailed() { m.bootFailures.Inc() }

// AgentCall records an RPC to the guest agent.
func (m *Shim) AgentCall(method string, d time.Duration, err error) {
	m.agentDuration.WithLabelValues(method).Observe(d.Seconds())
	if err != nil && !errors.Is(err, context.Canceled) {
		m.agentErrors.WithLabelValues(method).Inc()
	}
}

// TaskCall records a task API call.
func (m *Shim) TaskCall(method string, d time.Duration, err error) {
	if method != "Wait" {
		// Wait lasts as long as the process: not a latency.
		m.taskDuration.WithLabelValues(method).Observe(d.Seconds())
	}
	if err != nil {
		m.taskErrors.WithLabelValues(method).Inc()
	}
}
