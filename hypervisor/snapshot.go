package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// A VM template is a VM saved in two parts: its RAM, which is the memory
// file it ran on (Config.Memory, shared), and its device state, which
// SaveState writes with migration's x-ignore-shared capability so that the
// RAM is left out. A VM started with the same command line, the file
// mapped private and Incoming set, becomes the template again with
// RestoreState: no boot, and its pages are the template's until it writes
// them.

// ignoreShared is the migration capability both sides must set: RAM in a
// shared file is not copied, the destination maps the same file.
var ignoreShared = map[string]any{
	"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}},
}

const stateFD = "podvm-state"

// SaveState pauses a VM whose RAM is a shared memory file and writes its
// device state to f. The VM stays paused; the caller ends it.
func (vm *VM) SaveState(ctx context.Context, f *os.File) error {
	if !vm.cfg.template() {
		return fmt.Errorf("save VM %s: its RAM is not a shared memory file", vm.cfg.ID)
	}
	if err := vm.qmp.Execute(ctx, "migrate-set-capabilities", ignoreShared, nil); err != nil {
		return fmt.Errorf("save VM %s: %w", vm.cfg.ID, err)
	}
	if err := vm.qmp.Stop(ctx); err != nil {
		return fmt.Errorf("save VM %s: %w", vm.cfg.ID, err)
	}
	if err := vm.qmp.ExecuteWithFile(ctx, "getfd", map[string]any{"fdname": stateFD}, nil, f); err != nil {
		return fmt.Errorf("save VM %s: %w", vm.cfg.ID, err)
	}
	if err := vm.qmp.Execute(ctx, "migrate", map[string]any{"uri": "fd:" + stateFD}, nil); err != nil {
		return fmt.Errorf("save VM %s: %w", vm.cfg.ID, err)
	}
	for {
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := vm.qmp.Execute(ctx, "query-migrate", nil, &st); err != nil {
			return fmt.Errorf("save VM %s: %w", vm.cfg.ID, err)
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("save VM %s: migration %s: %s", vm.cfg.ID, st.Status, st.ErrorDesc)
		}
		if err := vm.pause(ctx, 2*time.Millisecond); err != nil {
			return fmt.Errorf("save VM %s: %w", vm.cfg.ID, err)
		}
	}
}

// RestoreState loads the device state in f into a VM started with
// Incoming, then resumes it. QEMU exits if the state does not fit its
// command line; the error then carries its reason.
func (vm *VM) RestoreState(ctx context.Context, f *os.File) error {
	if !vm.cfg.Incoming {
		return fmt.Errorf("restore VM %s: it was not started to receive a state", vm.cfg.ID)
	}
	err := vm.restore(ctx, f)
	if err == nil {
		return nil
	}
	select {
	case <-vm.done:
		if exit := vm.Err(); exit != nil {
			err = exit
		}
	case <-time.After(100 * time.Millisecond):
	}
	return fmt.Errorf("restore VM %s: %w", vm.cfg.ID, err)
}

func (vm *VM) restore(ctx context.Context, f *os.File) error {
	if err := vm.qmp.Execute(ctx, "migrate-set-capabilities", ignoreShared, nil); err != nil {
		return err
	}
	if err := vm.qmp.ExecuteWithFile(ctx, "getfd", map[string]any{"fdname": stateFD}, nil, f); err != nil {
		return err
	}
	if err := vm.qmp.Execute(ctx, "migrate-incoming", map[string]any{"uri": "fd:" + stateFD}, nil); err != nil {
		return err
	}
	for {
		st, err := vm.qmp.QueryStatus(ctx)
		if err != nil {
			return err
		}
		switch {
		case st.Running:
			return nil
		case st.Status != "inmigrate":
			// The template was saved paused, so the VM is too.
			return vm.qmp.Cont(ctx)
		}
		if err := vm.pause(ctx, time.Millisecond); err != nil {
			return err
		}
	}
}

// pause waits d, or fails early if QEMU exits or ctx ends.
func (vm *VM) pause(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-vm.done:
		return errors.New("qemu exited")
	case <-ctx.Done():
		return ctx.Err()
	}
}
