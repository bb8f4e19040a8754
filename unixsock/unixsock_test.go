package unixsock

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A socket 150 bytes deep, as a 64-character CRI sandbox ID under a long
// state directory makes one, is served and reached.
func TestLongPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 40), strings.Repeat("e", 64))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "metrics.sock"), filepath.Join(t.TempDir(), "s.sock")} {
		l, err := Listen(path)
		if err != nil {
			t.Fatalf("listen on %d-byte path: %v", len(path), err)
		}
		go func() {
			c, err := l.Accept()
			if err == nil {
				io.WriteString(c, "hello")
				c.Close()
			}
		}()
		c, err := Dial(context.Background(), path)
		if err != nil {
			t.Fatalf("dial %d-byte path: %v", len(path), err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "hello" {
			t.Errorf("read %q", b)
		}
		l.Close()
		if _, err := os.Stat(path); err != nil {
			t.Errorf("the listener removed its socket on close (the caller does): %v", err)
		}
		os.Remove(path)
	}
}
