package metrics

import (
	"strings"
	"testing"
)

func TestValue(t *testing.T) {
	fams, err := Parse(strings.NewReader(`# TYPE podvm_vm_vcpus gauge
podvm_vm_vcpus{sandbox_id="a"} 1
podvm_vm_vcpus{sandbox_id="b"} 2
# TYPE podvm_task_rpc_errors_total counter
podvm_task_rpc_errors_total{method="Start",sandbox_id="b"} 3
# TYPE podvm_agent_rpc_duration_seconds histogram
podvm_agent_rpc_duration_seconds_bucket{method="Health",sandbox_id="b",le="+Inf"} 5
podvm_agent_rpc_duration_seconds_sum{method="Health",sandbox_id="b"} 0.1
podvm_agent_rpc_duration_seconds_count{method="Health",sandbox_id="b"} 5
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
		ok     bool
	}{
		{"podvm_vm_vcpus", []string{"sandbox_id", "b"}, 2, true},
		{"podvm_vm_vcpus", nil, 1, true},
		{"podvm_task_rpc_errors_total", []string{"sandbox_id", "b", "method", "Start"}, 3, true},
		{"podvm_agent_rpc_duration_seconds", []string{"method", "Health"}, 5, true},
		{"podvm_vm_vcpus", []string{"sandbox_id", "c"}, 0, false},
		{"podvm_missing", nil, 0, false},
	} {
		if got, ok := Value(fams, tt.name, tt.labels...); got != tt.want || ok != tt.ok {
			t.Errorf("Value(%s, %v) = %v, %v; want %v, %v", tt.name, tt.labels, got, ok, tt.want, tt.ok)
		}
	}
}
