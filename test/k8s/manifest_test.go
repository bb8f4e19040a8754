//go:build k8s

package k8s

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/podvm/podvm/test/harness"
)

// Pod is the part of a v1 Pod the tests write and read.
type Pod struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
		UID  string `json:"uid,omitempty"`
	} `json:"metadata"`
	Spec   PodSpec   `json:"spec"`
	Status PodStatus `json:"status,omitempty"`
}

// PodSpec names its node: there is no scheduler.
type PodSpec struct {
	NodeName                      string         `json:"nodeName"`
	RuntimeClassName              string         `json:"runtimeClassName,omitempty"`
	RestartPolicy                 string         `json:"restartPolicy,omitempty"`
	TerminationGracePeriodSeconds *int           `json:"terminationGracePeriodSeconds,omitempty"`
	AutomountServiceAccountToken  bool           `json:"automountServiceAccountToken"`
	Containers                    []Container    `json:"containers"`
	Volumes                       []any          `json:"volumes,omitempty"`
	Overhead                      map[string]any `json:"overhead,omitempty"`
}

// Container is one container of a Pod.
type Container struct {
	Name            string         `json:"name"`
	Image           string         `json:"image"`
	ImagePullPolicy string         `json:"imagePullPolicy"`
	Command         []string       `json:"command,omitempty"`
	Resources       map[string]any `json:"resources,omitempty"`
	LivenessProbe   map[string]any `json:"livenessProbe,omitempty"`
	ReadinessProbe  map[string]any `json:"readinessProbe,omitempty"`
	VolumeMounts    []any          `json:"volumeMounts,omitempty"`
}

// PodStatus is what kubelet reports.
type PodStatus struct {
	Phase      string `json:"phase"`
	Conditions []struct {
		Type   string `json:"type"`
		Status string `json:"status"`
	} `json:"conditions"`
	ContainerStatuses []ContainerStatus `json:"containerStatuses"`
}

// ContainerStatus is one container's.
type ContainerStatus struct {
	Name         string `json:"name"`
	Ready        bool   `json:"ready"`
	RestartCount int    `json:"restartCount"`
	State        struct {
		Waiting    *struct{ Reason string } `json:"waiting"`
		Terminated *struct {
			Reason   string `json:"reason"`
			ExitCode int    `json:"exitCode"`
		} `json:"terminated"`
	} `json:"state"`
	LastState struct {
		Terminated *struct {
			Reason   string `json:"reason"`
			ExitCode int    `json:"exitCode"`
		} `json:"terminated"`
	} `json:"lastState"`
}

// container is a busybox container running command.
func container(name string, command []string) Container {
	return Container{Name: name, Image: harness.BusyboxImage, ImagePullPolicy: "Never", Command: command}
}

// newPod is a pod on the node with the given RuntimeClass ("" for the
// default handler, runc).
func newPod(name, runtimeClass string, containers ...Container) *Pod {
	p := &Pod{APIVersion: "v1", Kind: "Pod"}
	p.Metadata.Name = name
	p.Spec = PodSpec{NodeName: nodeName, RuntimeClassName: runtimeClass, Containers: containers}
	return p
}

// pod is newPod as a manifest.
func pod(name, runtimeClass string, containers ...Container) string {
	return newPod(name, runtimeClass, containers...).manifest()
}

func (p *Pod) manifest() string {
	b, err := json.Marshal(p)
	if err != nil {
		panic(err) // only the tests' own literals are marshalled
	}
	return string(b)
}

// getPod reads a pod through the API; name is "namespace/name" outside
// the default namespace.
func (n *Node) getPod(name string) (*Pod, error) {
	out, err := n.kubectlQuiet(append(podArgs(name), "-o", "json")...)
	if err != nil {
		return nil, err
	}
	var p Pod
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		return nil, fmt.Errorf("pod %s: %v", name, err)
	}
	return &p, nil
}

// podArgs are kubectl's arguments for "get pod" of a "namespace/name" or
// a name in the default namespace.
func podArgs(name string) []string {
	if ns, name, ok := strings.Cut(name, "/"); ok {
		return []string{"get", "-n", ns, "pod", name}
	}
	return []string{"get", "pod", name}
}

// ready reports whether kubelet says the pod is Ready.
func (p *Pod) ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

// waitPod waits until ok holds for the pod, or fails naming what with the
// pod's events.
func (n *Node) waitPod(name, what string, timeout time.Duration, ok func(*Pod) bool) *Pod {
	n.t.Helper()
	var last *Pod
	n.waitUntilOr(name+": "+what, timeout, func() bool {
		p, err := n.getPod(name)
		if err == nil {
			last = p
		}
		return err == nil && ok(p)
	}, func() string {
		ev, _ := n.kubectlQuiet(append([]string{"describe"}, podArgs(name)[1:]...)...)
		return ev
	})
	return last
}

// waitReady waits until the pod is Ready.
func (n *Node) waitReady(name string) *Pod {
	n.t.Helper()
	return n.waitPod(name, "Ready", 3*time.Minute, (*Pod).ready)
}
