package agent

import (
	"net"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/test/harness"
)

// TestLoopbackUp: in a new network namespace, whose lo starts down (as a
// guest's does), loopbackUp brings lo up and 127.0.0.1 answers.
func TestLoopbackUp(t *testing.T) {
	harness.NeedRoot(t)
	errc := make(chan error, 1)
	var before, after net.Flags
	go func() {
		// The thread is left in the new namespace and ends with the
		// goroutine (no UnlockOSThread).
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			errc <- err
			return
		}
		before = lo.Flags
		if err := loopbackUp(); err != nil {
			errc <- err
			return
		}
		if lo, err = net.InterfaceByName("lo"); err != nil {
			errc <- err
			return
		}
		after = lo.Flags
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			errc <- err
			return
		}
		defer l.Close()
		c, err := net.Dial("tcp", l.Addr().String())
		if err == nil {
			c.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if before&net.FlagUp != 0 {
		t.Fatalf("lo of a new namespace was up already (%v): the test shows nothing", before)
	}
	if after&net.FlagUp == 0 {
		t.Errorf("lo after loopbackUp: %v, want up", after)
	}
}
