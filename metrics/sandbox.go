package metrics

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	qemuRSSDesc = prometheus.NewDesc("podvm_qemu_rss_bytes",
		"Resident memory of the VM's QEMU process: the guest's touched memory plus QEMU's own.", nil, nil)
	guestTotalDesc = prometheus.NewDesc("podvm_guest_memory_total_bytes",
		"Memory the guest kernel manages (MemTotal).", nil, nil)
	guestAvailableDesc = prometheus.NewDesc("podvm_guest_memory_available_bytes",
		"Memory available in the guest for new work (MemAvailable).", nil, nil)
	containersDesc = prometheus.NewDesc("podvm_containers",
		"Containers in the sandbox.", nil, nil)
)

// sandboxCollector reads the sandbox at scrape time.
type sandboxCollector struct{ sb Sandbox }

func (c *sandboxCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{qemuRSSDesc, guestTotalDesc, guestAvailableDesc, containersDesc} {
		ch <- d
	}
}

func (c *sandboxCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(containersDesc, prometheus.GaugeValue, float64(c.sb.Containers()))
	pid := c.sb.QEMUPid()
	if pid == 0 {
		return
	}
	if rss, err := residentBytes(pid); err == nil {
		ch <- prometheus.MustNewConstMetric(qemuRSSDesc, prometheus.GaugeValue, float64(rss))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if total, avail, err := c.sb.GuestMemory(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(guestTotalDesc, prometheus.GaugeValue, float64(total))
		ch <- prometheus.MustNewConstMetric(guestAvailableDesc, prometheus.GaugeValue, float64(avail))
	}
}

// residentBytes is VmRSS of a process.
func residentBytes(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}
