//go:build !(cgo && seccomp)

package cinit

import (
	"errors"

	"github.com/opencontainers/runc/libcontainer/configs"
)

// Without libseccomp, a filter is libcontainer's (which cannot either).
func seccompSupported(s *configs.Seccomp) error {
	if s != nil {
		return errors.New("seccomp (built without libseccomp)")
	}
	return nil
}

func seccompProgram(*configs.Seccomp) ([]byte, error) {
	return nil, errors.New("built without libseccomp")
}

func seccompFlags(*configs.Seccomp) (uint, error) {
	return 0, errors.New("built without libseccomp")
}
