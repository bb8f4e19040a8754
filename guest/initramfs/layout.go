package initramfs

// Layout is the podvm guest's root: the agent as /init, the directories it
// mounts on, and /dev/console, without which the kernel starts /init with
// no standard file descriptors.
func Layout(agentPath string) []Entry {
	dirs := []string{"dev", "proc", "sys", "run", "tmp", "etc", "root", "var"}
	var es []Entry
	for _, d := range dirs {
		mode := uint32(TypeDir | 0o755)
		if d == "tmp" {
			mode = TypeDir | 0o1777
		}
		es = append(es, Entry{Name: d, Mode: mode})
	}
	es = append(es,
		Entry{Name: "dev/console", Mode: TypeChar | 0o600, Major: 5, Minor: 1},
		Entry{Name: "dev/null", Mode: TypeChar | 0o666, Major: 1, Minor: 3},
		Entry{Name: "init", Mode: TypeRegular | 0o755, Source: agentPath},
	)
	return es
}
