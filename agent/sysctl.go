package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// maxSysctlValue bounds a value written to /proc/sys.
const maxSysctlValue = 4096

// SetSysctls writes the pod's network sysctls into the guest's network
// namespace (the pod's). Only net.* keys of plain words are taken: a key
// names a file under /proc/sys/net, never anything else.
func (s *networkService) SetSysctls(ctx context.Context, req *agentapi.SysctlsRequest) (*emptypb.Empty, error) {
	for key, value := range req.Sysctls {
		path, err := netSysctlPath(key)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%v", err)
		}
		if len(value) > maxSysctlValue {
			return nil, status.Errorf(codes.InvalidArgument, "sysctl %s: value longer than %d bytes", key, maxSysctlValue)
		}
		if err := os.WriteFile(path, []byte(value), 0); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "sysctl %s=%q: %v", key, value, err)
		}
		logf(levelDebug, "sysctl %s = %s", key, value)
	}
	return &emptypb.Empty{}, nil
}

// netSysctlPath is the /proc/sys file of a net.* sysctl.
func netSysctlPath(key string) (string, error) {
	parts := strings.Split(key, ".")
	if len(parts) < 2 || parts[0] != "net" {
		return "", fmt.Errorf("sysctl %q is not a network sysctl (net.*)", key)
	}
	for _, p := range parts {
		if p == "" || strings.ContainsAny(p, "/\x00") {
			return "", fmt.Errorf("sysctl %q is not a sysctl name", key)
		}
	}
	return filepath.Join(append([]string{"/proc/sys"}, parts...)...), nil
}
