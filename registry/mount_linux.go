package registry

import (
	"path/filepath"
	"syscall"
)

// fuseMagic is the filesystem type statfs reports for FUSE mounts.
const fuseMagic = 0x65735546

// mountOf reports whether dir (absolute) lies in a live-objects mount, and
// if so the mount's top folder and the root folder it shows: the first
// folder up from dir with the MountRootAttr attribute. Folders not on a
// FUSE filesystem are answered with one statfs.
func mountOf(dir string) (top, root string, ok bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || st.Type != fuseMagic {
		return "", "", false
	}
	buf := make([]byte, 4096)
	for d := dir; ; d = filepath.Dir(d) {
		if n, err := syscall.Getxattr(d, MountRootAttr, buf); err == nil && n > 0 {
			return d, string(buf[:n]), true
		}
		if filepath.Dir(d) == d {
			return "", "", false
		}
	}
}
