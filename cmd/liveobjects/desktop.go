package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Desktop integration: a MIME type for *.liveobject files (so that file
// managers know them by name and never sniff a live file's content, which
// would join it), an application that opens one in a terminal, and
// shortcuts to objects.

const mimeType = "application/x-liveobject"

const mimeXML = `<?xml version="1.0" encoding="UTF-8"?>
<mime-info xmlns="http://www.freedesktop.org/standards/shared-mime-info">
  <mime-type type="application/x-liveobject">
    <comment>Live distributed object</comment>
    <generic-icon name="application-x-liveobject"/>
    <glob pattern="*.liveobject" weight="90"/>
  </mime-type>
</mime-info>
`

const iconSVG = `<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">
  <rect x="6" y="6" width="52" height="52" rx="8" fill="#1f6feb"/>
  <circle cx="22" cy="24" r="6" fill="#fff"/><circle cx="42" cy="24" r="6" fill="#fff"/>
  <circle cx="32" cy="44" r="6" fill="#fff"/>
  <path d="M22 24 L42 24 L32 44 Z" fill="none" stroke="#fff" stroke-width="3"/>
</svg>
`

func dataHome() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return d
	}
	h, _ := os.UserHomeDir()
	return filepath.Join(h, ".local", "share")
}

func selfPath() string {
	p, err := os.Executable()
	if err != nil {
		return "liveobjects"
	}
	return p
}

func desktopEntry(name, exec, comment string) string {
	return fmt.Sprintf(`[Desktop Entry]
Type=Application
Version=1.0
Name=%s
Comment=%s
Exec=%s
Icon=application-x-liveobject
Terminal=true
Categories=Network;
MimeType=%s;
`, name, comment, exec, mimeType)
}

// quoteExec quotes an argument for a desktop entry's Exec key.
func quoteExec(s string) string {
	r := strings.NewReplacer(`\`, `\\\\`, `"`, `\"`, "`", "\\`", "$", `\$`)
	return `"` + r.Replace(s) + `"`
}

func init() {
	register(&command{
		Name:    "desktop install",
		Summary: "teach the desktop about .liveobject files: MIME type, icon, and an opener",
		Help: `Writes, under $XDG_DATA_HOME (default ~/.local/share): a MIME type
application/x-liveobject for *.liveobject (file managers then know live files by
name and never read them to guess), its icon, and an application entry that opens
an object in a terminal with 'liveobjects open'. Runs update-mime-database and
update-desktop-database when they are installed.`,
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 0 {
				return usagef("takes no arguments")
			}
			home := dataHome()
			files := map[string]string{
				filepath.Join(home, "mime", "packages", "liveobjects.xml"):                                       mimeXML,
				filepath.Join(home, "icons", "hicolor", "scalable", "mimetypes", "application-x-liveobject.svg"): iconSVG,
				filepath.Join(home, "applications", "liveobjects-open.desktop"): desktopEntry("Live object", quoteExec(selfPath())+" open %f",
					"Join a live distributed object and follow its events"),
			}
			for p, content := range files {
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					return fmt.Errorf("%w (the files go under %s: $XDG_DATA_HOME, or ~/.local/share when it is not set)", err, home)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					return err
				}
				fmt.Println(p)
			}
			for _, tool := range [][]string{{"update-mime-database", filepath.Join(home, "mime")}, {"update-desktop-database", filepath.Join(home, "applications")}} {
				if p, err := exec.LookPath(tool[0]); err == nil {
					if out, err := exec.CommandContext(ctx, p, tool[1:]...).CombinedOutput(); err != nil {
						return fmt.Errorf("%s: %v: %s", tool[0], err, out)
					}
				}
			}
			return nil
		},
	})
	register(&command{
		Name:    "shortcut",
		Args:    "OBJECT [DIR]",
		Summary: "make a desktop shortcut that opens a live object (default DIR: ~/Desktop)",
		Run: func(ctx context.Context, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("want OBJECT and at most one DIR")
			}
			obj, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			if st, err := os.Stat(obj); err != nil {
				return fmt.Errorf("%w (give a .liveobject file of a mount)", err)
			} else if st.IsDir() {
				return fmt.Errorf("%s is a folder, not an object file (give a .liveobject file of a mount)", args[0])
			}
			if err := checkLiveObject(args[0]); err != nil {
				return err
			}
			dir := ""
			if len(args) == 2 {
				dir = args[1]
			} else {
				h, _ := os.UserHomeDir()
				dir = filepath.Join(h, "Desktop")
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			p, err := writeShortcut(dir, strings.TrimSuffix(filepath.Base(obj), ".liveobject"), obj)
			if err != nil {
				return err
			}
			fmt.Println(p)
			return nil
		},
	})
	register(&command{
		Name:    "open",
		Args:    "OBJECT",
		Summary: "join a live object in a mount and print its state and events until Ctrl-C",
		Help:    `What a desktop shortcut runs: prints the object's name and type, then streams it like cat.`,
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want one OBJECT file")
			}
			name := args[0]
			st, err := os.Stat(name)
			if err != nil {
				return err
			}
			if st.IsDir() {
				return fmt.Errorf("%s is a folder, not an object file (give a .liveobject file of a mount)", name)
			}
			if err := checkLiveObject(name); err != nil {
				return err
			}
			f, err := os.Open(name)
			if err != nil {
				return objectError(name, err)
			}
			if cat, err := getxattr(name, "user.liveobject.category"); err == nil {
				drv, _ := getxattr(name, "user.liveobject.driver")
				fmt.Fprintf(os.Stderr, "%s: %s over %s (Ctrl-C to leave)\n", filepath.Base(name), cat, drv)
			}
			done := make(chan error, 1)
			go func() {
				_, err := io.Copy(os.Stdout, f)
				f.Close()
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					return objectError(name, err)
				}
				return nil
			case <-ctx.Done():
				// f is not closed here: Close waits for the read, which
				// waits for the object's next event. The process exits
				// now, which ends the read and leaves the object.
				return nil
			}
		},
	})
}

// objectError adds to err, from opening or reading the live object name,
// what the mount says went wrong (user.liveobject.error).
func objectError(name string, err error) error {
	if msg, xerr := getxattr(name, "user.liveobject.error"); xerr == nil && msg != "" {
		return fmt.Errorf("%v: %s", err, msg)
	}
	return err
}

// checkLiveObject refuses a file that is not a live object of a mount
// (open cannot join it, so neither can a shortcut).
func checkLiveObject(name string) error {
	if _, err := getxattr(name, "user.liveobject.path"); err != nil {
		return fmt.Errorf("%s is not a live object of a mount (it has no user.liveobject.path): it is a file on disk, perhaps a definition, or a distributed file of files/; open the object through a mount of its root ('liveobjects up', then the file below ./live)", name)
	}
	return nil
}

func getxattr(path, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := syscall.Getxattr(path, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// writeShortcut writes a shortcut named name in dir that opens obj, and
// returns its path. A file of that name that is not the same shortcut (one
// to an object of the same name in another folder, or anything else) is
// kept: the shortcut takes the first free "name (N)", as file managers
// name copies. The same shortcut again is written over.
func writeShortcut(dir, name, obj string) (string, error) {
	command := quoteExec(selfPath()) + " open " + quoteExec(obj)
	for n := 1; n <= 100; n++ {
		label := name
		if n > 1 {
			label = fmt.Sprintf("%s (%d)", name, n)
		}
		p := filepath.Join(dir, label+".desktop")
		entry := desktopEntry(label, command, "Live object "+obj)
		old, err := os.ReadFile(p)
		switch {
		case err == nil && string(old) != entry:
			continue // taken by something else
		case err != nil && !errors.Is(err, os.ErrNotExist):
			if st, serr := os.Stat(p); serr == nil && st.IsDir() {
				continue
			}
			return "", err
		}
		return p, os.WriteFile(p, []byte(entry), 0o755)
	}
	return "", fmt.Errorf("%s already holds 100 files named like %q: remove some, or give another DIR", dir, name+".desktop")
}
