package harness

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Memory is a process's memory in MiB.
type Memory struct {
	RSS, PSS, Anon float64
}

// Add is m and o together.
func (m Memory) Add(o Memory) Memory {
	return Memory{RSS: m.RSS + o.RSS, PSS: m.PSS + o.PSS, Anon: m.Anon + o.Anon}
}

// ReadMemory reads /proc/PID/smaps_rollup.
func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m.take(sc.Text())
	}
	return m, sc.Err()
}

// Mapping is one of a process's mappings and its memory.
type Mapping struct {
	Name    string  // the file mapped, a [name] or "" (anonymous)
	Perms   string  // as in /proc/PID/maps: "rw-p", "r-xp", ...
	SizeMiB float64 // the address space it spans
	Memory
}

// ReadMappings reads /proc/PID/smaps: each mapping's memory.
func ReadMappings(pid int) ([]Mapping, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var maps []Mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		// A mapping's first line: range, perms, offset, device, inode
		// and the name, if any.
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			var lo, hi uint64
			if _, err := fmt.Sscanf(fields[0], "%x-%x", &lo, &hi); err != nil {
				return nil, fmt.Errorf("smaps of %d: %q: %w", pid, line, err)
			}
			maps = append(maps, Mapping{Perms: fields[1], SizeMiB: float64(hi-lo) / (1 << 20), Name: strings.Join(fields[5:], " ")})
			continue
		}
		if len(maps) > 0 {
			maps[len(maps)-1].take(line)
		}
	}
	return maps, sc.Err()
}

// take sets m's field from a "Rss:", "Pss:" or "Anonymous:" line of
// smaps or smaps_rollup; other lines leave m as it is.
func (m *Memory) take(line string) {
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return
	}
	kb, err := strconv.ParseFloat(fields[1], 64)
	if err != nil {
		return
	}
	switch fields[0] {
	case "Rss:":
		m.RSS = kb / 1024
	case "Pss:":
		m.PSS = kb / 1024
	case "Anonymous:":
		m.Anon = kb / 1024
	}
}
