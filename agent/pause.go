package agent

// PauseName is the name the agent's binary answers to as a pod's infra
// process: the host bind-mounts the binary at /PauseName in the infra
// container, which holds the pod's PID, IPC and UTS namespaces when the
// Sandbox API starts a pod without a pause container. What Kubernetes'
// pause does is done in C before the Go runtime starts
// (cmd/podvm-agent/pause.c), and never reaches this package.
const PauseName = "pause"
