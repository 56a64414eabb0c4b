//go:build !linux

package registry

// mountOf reports whether dir lies in a live-objects mount; mounts exist
// only on Linux.
func mountOf(dir string) (top, root string, ok bool) { return "", "", false }
