package vmconfig

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// AnnotationPrefix starts the pod annotations that change configuration
// keys: io.podvm.config.hypervisor.vcpus = "2". containerd's CRI passes them
// on only if the runtime's pod_annotations list them (io.podvm.config.*).
const AnnotationPrefix = "io.podvm.config."

// Annotations is the [annotations] table.
type Annotations struct {
	// Allowed lists the keys pods may change. Keys that choose a binary or
	// a file on the host (hypervisor.path, kernel, initramfs, state_dir,
	// template.dir)
	// are not in the default list: a pod that can name a file can make the
	// node run it.
	Allowed []string `toml:"allowed"`
	// MaxVCPUs and MaxMemoryMiB bound what annotations may ask for: a pod
	// sizes its VM within them, and only the operator's configuration
	// goes beyond.
	MaxVCPUs     int `toml:"max_vcpus"`
	MaxMemoryMiB int `toml:"max_memory_mib"`
}

// annotationKeys are the keys of the configuration ("section.key"), for
// checking allowlists; filled from the struct tags.
var annotationKeys = map[string]bool{}

func init() {
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("toml")
			if tag == "" || tag == "annotations" {
				continue
			}
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(Duration{}) {
				walk(f.Type, prefix+tag+".")
				continue
			}
			annotationKeys[prefix+tag] = true
		}
	}
	walk(reflect.TypeOf(Config{}), "")
}

// WithAnnotations returns a copy of c with the pod's io.podvm.config.*
// annotations applied. An annotation for a key the allowlist does not hold
// is an error naming the key (never silently ignored), as is a bad value.
func (c *Config) WithAnnotations(annotations map[string]string) (*Config, error) {
	var keys []string
	for k := range annotations {
		if strings.HasPrefix(k, AnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return c, nil
	}
	sort.Strings(keys)
	sections := map[string][]string{}
	var top []string
	for _, a := range keys {
		key := strings.TrimPrefix(a, AnnotationPrefix)
		if !annotationKeys[key] {
			// hypervisor_path for hypervisor.path: name the real key,
			// and whether a pod could set it at all.
			if alt := strings.Replace(key, "_", ".", 1); annotationKeys[alt] {
				allowed := "which pods may not set (an operator can allow it in annotations.allowed)"
				if slices.Contains(c.Annotations.Allowed, alt) {
					allowed = "which pods may set"
				}
				return nil, fmt.Errorf("annotation %s: %q is not a configuration key; did you mean %s%s, %s?", a, key, AnnotationPrefix, alt, allowed)
			}
			return nil, fmt.Errorf("annotation %s: %q is not a configuration key", a, key)
		}
		if !slices.Contains(c.Annotations.Allowed, key) {
			return nil, fmt.Errorf("annotation %s: the key %q may not be set by pods; an operator can allow it in annotations.allowed of %s", a, key, DefaultPath)
		}
		line := key[strings.LastIndex(key, ".")+1:] + " = " + tomlValue(annotations[a])
		if section, _, ok := strings.Cut(key, "."); ok {
			sections[section] = append(sections[section], line)
		} else {
			top = append(top, line)
		}
	}
	doc := strings.Join(top, "\n") + "\n"
	for section, lines := range sections {
		doc += "[" + section + "]\n" + strings.Join(lines, "\n") + "\n"
	}
	out, err := c.Overlay(doc)
	if err != nil {
		return nil, fmt.Errorf("pod annotations %s*: %w", AnnotationPrefix, err)
	}
	// A pod sizes its VM within the bounds the operator set for pods;
	// larger VMs are the operator's to configure.
	if v := out.Hypervisor.VCPUs; v > c.Hypervisor.VCPUs && v > c.Annotations.MaxVCPUs {
		return nil, fmt.Errorf("annotation %shypervisor.vcpus: %d is more than pods may ask for (annotations.max_vcpus = %d in %s)", AnnotationPrefix, v, c.Annotations.MaxVCPUs, DefaultPath)
	}
	if m := out.Hypervisor.MemoryMiB; m > c.Hypervisor.MemoryMiB && m > c.Annotations.MaxMemoryMiB {
		return nil, fmt.Errorf("annotation %shypervisor.memory_mib: %d is more than pods may ask for (annotations.max_memory_mib = %d in %s)", AnnotationPrefix, m, c.Annotations.MaxMemoryMiB, DefaultPath)
	}
	if m := out.Hypervisor.MaxMemoryMiB; m > c.Hypervisor.MaxMemoryMiB && m > c.Annotations.MaxMemoryMiB {
		return nil, fmt.Errorf("annotation %shypervisor.max_memory_mib: %d is more than pods may ask for (annotations.max_memory_mib = %d in %s)", AnnotationPrefix, m, c.Annotations.MaxMemoryMiB, DefaultPath)
	}
	return out, nil
}

// tomlValue writes an annotation's value as TOML: numbers and booleans as
// they are, anything else as a string.
func tomlValue(v string) string {
	if _, err := strconv.ParseInt(v, 10, 64); err == nil {
		return v
	}
	if v == "true" || v == "false" {
		return v
	}
	return strconv.Quote(v)
}
