package harness

import (
	"math"
	"os"
	"testing"
)

// TestReadMappings reads this process's mappings: its own binary's code
// is among them, and together they hold what smaps_rollup says.
func TestReadMappings(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	maps, err := ReadMappings(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	whole, err := ReadMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var sum Memory
	code := false
	for _, m := range maps {
		sum = sum.Add(m.Memory)
		if m.Name == exe && m.Perms == "r-xp" && m.SizeMiB > 0 && m.RSS > 0 {
			code = true
		}
	}
	if !code {
		t.Errorf("no r-xp mapping of %s with memory among %d mappings", exe, len(maps))
	}
	// The process runs between the two reads: close, not equal.
	if math.Abs(sum.RSS-whole.RSS) > 0.1*whole.RSS || whole.RSS == 0 {
		t.Errorf("mappings hold %.1f MiB resident, smaps_rollup says %.1f", sum.RSS, whole.RSS)
	}
}
