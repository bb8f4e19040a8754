package debugconsole

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteHello(&buf, Hello{Term: "xterm", Size: Size{Width: 120, Height: 40}}); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&buf, Data, []byte("ls\n")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&buf, Resize, Size{Width: 80, Height: 25}.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&buf, Exit, ExitBytes(-1)); err != nil {
		t.Fatal(err)
	}

	typ, b, err := ReadFrame(&buf)
	if err != nil || typ != Open {
		t.Fatalf("first frame %q, %v", typ, err)
	}
	if h, err := ParseHello(b); err != nil || h.Term != "xterm" || h.Size != (Size{120, 40}) {
		t.Fatalf("hello %+v, %v", h, err)
	}
	if typ, b, err = ReadFrame(&buf); err != nil || typ != Data || string(b) != "ls\n" {
		t.Fatalf("data frame %q %q, %v", typ, b, err)
	}
	typ, b, _ = ReadFrame(&buf)
	if s, err := ParseSize(b); typ != Resize || err != nil || s != (Size{80, 25}) {
		t.Fatalf("resize frame %q %+v, %v", typ, s, err)
	}
	typ, b, _ = ReadFrame(&buf)
	if st, err := ParseExit(b); typ != Exit || err != nil || st != -1 {
		t.Fatalf("exit frame %q %d, %v", typ, st, err)
	}
	if _, _, err := ReadFrame(&buf); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestBadFrames(t *testing.T) {
	for name, in := range map[string]string{
		"short header": "d\x00",
		"short body":   "d\x00\x00\x00\x05ab",
		"huge":         "d\xff\xff\xff\xff",
	} {
		if _, _, err := ReadFrame(strings.NewReader(in)); err == nil || err == io.EOF {
			t.Errorf("%s: err %v, want a framing error", name, err)
		}
	}
	if _, err := ParseSize([]byte{1}); err == nil {
		t.Error("ParseSize of 1 byte succeeded")
	}
	if _, err := ParseHello([]byte("{")); err == nil {
		t.Error("ParseHello of bad JSON succeeded")
	}
}
