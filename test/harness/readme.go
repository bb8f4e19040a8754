package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// READMEBlock returns the fenced code block of the README whose language
// is lang and whose text holds marker, so that tests run what the README
// tells users to type rather than a copy that can drift from it.
func READMEBlock(lang, marker string) (string, error) {
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "README.md"))
	if err != nil {
		return "", err
	}
	var found []string
	rest := string(b)
	for {
		_, after, ok := strings.Cut(rest, "```"+lang+"\n")
		if !ok {
			break
		}
		block, next, ok := strings.Cut(after, "```")
		if !ok {
			return "", fmt.Errorf("README.md: unterminated %s block", lang)
		}
		if strings.Contains(block, marker) {
			found = append(found, block)
		}
		rest = next
	}
	if len(found) != 1 {
		return "", fmt.Errorf("README.md: %d %s blocks hold %q, want one", len(found), lang, marker)
	}
	return found[0], nil
}
