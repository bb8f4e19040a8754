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
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			continue
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
	return m, sc.Err()
}
