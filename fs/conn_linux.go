package fs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// fuseControl is where the kernel's FUSE control filesystem shows one
// folder per connection, with an abort file that ends the connection.
const fuseControl = "/sys/fs/fuse/connections"

// mountDev returns the device ("major:minor") of the filesystem mounted at
// dir, from /proc/self/mountinfo (the mount itself is not touched). With
// mounts stacked on dir, the topmost counts.
func mountDev(dir string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	dev := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJOR:MINOR ROOT MOUNTPOINT ...
		fl := strings.Fields(sc.Text())
		if len(fl) > 4 && unescapeMount(fl[4]) == dir {
			dev = fl[2]
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if dev == "" {
		return "", fmt.Errorf("%s is not a mountpoint", dir)
	}
	return dev, nil
}

// unescapeMount undoes the octal escapes (\040 for a space) of paths in
// /proc/self/mounts and mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// connID turns a mount's "major:minor" into the name of its folder in the
// FUSE control filesystem (the kernel's dev_t, major<<20 | minor).
func connID(dev string) (string, error) {
	maj, min, ok := strings.Cut(dev, ":")
	if !ok {
		return "", fmt.Errorf("device %q is not major:minor", dev)
	}
	a, err1 := strconv.ParseUint(maj, 10, 32)
	b, err2 := strconv.ParseUint(min, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return "", fmt.Errorf("device %q: %w", dev, err)
	}
	return strconv.FormatUint(a<<20|b, 10), nil
}

// abortConn ends the mount's FUSE connection: every request pending or to
// come fails with ENOTCONN, the server's loop ends, and the kernel lets go
// of the mount once the processes in it do. It writes the connection's
// abort file in the FUSE control filesystem, or, when that is not mounted
// and the mount is still attached, asks for a forced unmount (which aborts
// a FUSE connection first; it needs root). It reports whether either was
// done.
func (m *Mount) abortConn() bool {
	if m.conn != "" {
		if err := os.WriteFile(filepath.Join(fuseControl, m.conn, "abort"), []byte("1"), 0); err == nil {
			return true
		}
	}
	if !isMounted(m.dir) {
		return false
	}
	err := syscall.Unmount(m.dir, syscall.MNT_FORCE)
	// EBUSY: the connection was aborted, but processes still hold the
	// mount; it is detached lazily next.
	return err == nil || errors.Is(err, syscall.EBUSY)
}
