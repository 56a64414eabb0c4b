package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/cmd/liveobjects/clibin"
	"github.com/liveobjects/liveobjects/transport/qsm"
)

// bin is the liveobjects binary built once for these tests.
var bin string

func TestMain(m *testing.M) {
	var err error
	if bin, err = clibin.Build(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(clibin.Run(m))
}

func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse: the end-to-end mount tests need FUSE")
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			t.Skip("not root and no fusermount3 (apt-get install fuse3)")
		}
	}
}

// daemon is a liveobjects process started by a test; it is killed and
// its mount (if any) detached at cleanup.
type daemon struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr *strings.Builder
	done   chan error
}

func (d *daemon) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

func start(t *testing.T, mnt string, args ...string) *daemon {
	t.Helper()
	return startCmd(t, mnt, bin, args...)
}

// startCmd is start with the program named: bin, or a wrapper that runs
// it (nsenter, to run it on a test host of a network namespace).
func startCmd(t *testing.T, mnt, name string, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(name, args...)
	var sb strings.Builder
	pr, pw, _ := os.Pipe()
	cmd.Stderr = pw
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	d := &daemon{cmd: cmd, stderr: &sb, done: make(chan error, 1)}
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	go func() {
		for l := range lines {
			d.mu.Lock()
			sb.WriteString(l + "\n")
			d.mu.Unlock()
		}
		d.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-d.done
		if mnt != "" {
			exec.Command("umount", "-l", mnt).Run()
		}
		if t.Failed() {
			t.Logf("%s %s output:\n%s", filepath.Base(name), strings.Join(args, " "), d.output())
		}
	})
	return d
}

func sh(t *testing.T, script string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	killGroupOnCancel(cmd)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// killGroupOnCancel runs cmd in a process group of its own and, when its
// context ends, kills the whole group: a child the shell waits for (a cat
// blocked on a live file) would otherwise keep the output pipe open and
// the test waiting after the shell itself was killed.
func killGroupOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
}

func waitFor(t *testing.T, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mounted(dir string) bool {
	b, _ := os.ReadFile("/proc/mounts")
	return strings.Contains(string(b), " "+dir+" fuse")
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestUp runs the main job as a user would: up, cat, echo, Ctrl-C.
func TestUp(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "live")
	root := filepath.Join(dir, "root")
	d := start(t, mnt, "up", "--root", root, "--listen", "127.0.0.1:0", mnt)
	waitFor(t, 20*time.Second, func() error {
		if !mounted(mnt) {
			return fmt.Errorf("not mounted yet")
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(root, "services")); err != nil {
		t.Fatalf("up did not create a root: %v", err)
	}
	qsmOffSaysWhy(t, d, mnt, root)
	// The chat channel keeps a history, so head sees both lines even if
	// it joins after they were published.
	headOut := filepath.Join(dir, "head.out")
	out, err := sh(t, fmt.Sprintf("cd %s && (timeout 10 head -n 2 channels/chat.liveobject > %s 2>/dev/null &); echo one >> channels/chat.liveobject; echo two >> channels/chat.liveobject; for i in $(seq 100); do [ $(wc -l < %s) -ge 2 ] && break; sleep 0.1; done; cat %s", mnt, headOut, headOut, headOut))
	if err != nil || !strings.HasSuffix(out, "one\ntwo\n") {
		t.Fatalf("cat through up's mount got %q (%v)", out, err)
	}
	st, err := sh(t, "cat "+mnt+"/services/*.liveobject")
	if err != nil || !strings.Contains(st, "state: running") {
		t.Fatalf("services/ does not show a running relay: %q %v", st, err)
	}
	desktopChecks(t, mnt)
	showAndCheckOnMount(t, mnt)
	d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("up exited with %v after Ctrl-C", err)
		}
		d.done <- err
	case <-time.After(15 * time.Second):
		t.Fatal("up did not stop on Ctrl-C")
	}
	if mounted(mnt) {
		t.Fatal("up left its mount behind")
	}
}

// qsmOffSaysWhy: with the QSM local service off (as up makes a root), a
// channel in qsm/ cannot be joined; the shell sees the errno, and the
// error attribute and the daemon's log say what to do.
func qsmOffSaysWhy(t *testing.T, d *daemon, mnt, root string) {
	t.Helper()
	// Point the root's QSM settings at a port nobody listens on, so that a
	// QSM service running on this machine changes nothing.
	_, port, _ := net.SplitHostPort(freePort(t))
	editRegistry(t, root, func(s string) string { return strings.ReplaceAll(s, "60100", port) })
	// The mount reads the registry again when it changes: until its copy
	// has the new port, a join would still go to 60100.
	waitFor(t, 10*time.Second, func() error {
		if out, err := sh(t, "grep -rlF 'value=\""+port+"\"' "+mnt+"/registry"); err != nil {
			return fmt.Errorf("the mount's registry does not have QSM port %s yet: %q %v", port, out, err)
		}
		return nil
	})
	waitFor(t, 10*time.Second, func() error {
		out, err := sh(t, "cat "+mnt+"/qsm/chat.liveobject 2>&1")
		if err == nil || !strings.Contains(out, "Connection refused") || !strings.Contains(out, port) && !strings.Contains(d.output(), port) {
			return fmt.Errorf("cat qsm/chat.liveobject with the QSM service off (port %s): %q %v", port, out, err)
		}
		return nil
	})
	attr, err := sh(t, "getfattr --only-values -n user.liveobject.error "+mnt+"/qsm/chat.liveobject")
	if err != nil || !strings.Contains(attr, "liveobjects service on ROOT quicksilver_localservice") {
		t.Fatalf("the error attribute does not say how to switch QSM on: %q %v", attr, err)
	}
	if log := d.output(); !strings.Contains(log, "join failed") || !strings.Contains(log, "qsm/chat.liveobject") {
		t.Fatalf("the daemon did not log the failed join:\n%s", log)
	}
}

// qsmCoordinatorOffOn: with the QSM coordinator switched off, the local
// service's file in services/ says that its link to the coordinator is
// down and why; switched on again, that the link is up.
func qsmCoordinatorOffOn(t *testing.T, mnt, root string) {
	t.Helper()
	file := mnt + "/services/quicksilver_localservice.liveobject"
	for _, c := range []struct{ sw, want string }{{"off", "coordinator: down: "}, {"on", "coordinator: up\n"}} {
		if got, err := exec.Command(bin, "service", c.sw, root, "quicksilver_coordinator").CombinedOutput(); err != nil {
			t.Fatalf("service %s quicksilver_coordinator: %v %s", c.sw, err, got)
		}
		waitFor(t, 20*time.Second, func() error {
			out, err := sh(t, "cat "+file)
			if err != nil || !strings.Contains(out, c.want) {
				return fmt.Errorf("after service %s quicksilver_coordinator, the local service's status lacks %q: %v\n%s", c.sw, c.want, err, out)
			}
			return nil
		})
	}
}

// qsmRestart: the QSM local service that up hosts is switched off under a
// reader of a QSM channel. The reader ends with EIO (it may have missed
// events) and the error attribute says why and what to do; once the
// service is on again, the channel is joined afresh.
func qsmRestart(t *testing.T, mnt, root, dir string) {
	t.Helper()
	out, errOut := filepath.Join(dir, "restart.out"), filepath.Join(dir, "restart.err")
	if got, err := sh(t, fmt.Sprintf(`cd %s && (timeout 30 cat qsm/chat.liveobject > %s 2> %s &)
for i in $(seq 1 100); do echo "before restart" >> qsm/chat.liveobject; grep -q "before restart" %s && break; sleep 0.1; done; cat %s`,
		mnt, out, errOut, out, out)); err != nil || !strings.Contains(got, "before restart") {
		t.Fatalf("reader of qsm/chat before the restart: %q %v", got, err)
	}
	// What a desktop shortcut runs, beside the cat.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open := exec.CommandContext(ctx, bin, "open", mnt+"/qsm/chat.liveobject")
	var openOut lockedBuffer
	open.Stdout, open.Stderr = &openOut, &openOut
	if err := open.Start(); err != nil {
		t.Fatal(err)
	}
	openDone := make(chan error, 1)
	go func() { openDone <- open.Wait() }()
	// open prints the object's type once the file is open (joined).
	waitFor(t, 10*time.Second, func() error {
		if !strings.Contains(openOut.String(), "stream over qsm") {
			return fmt.Errorf("open of qsm/chat has not joined yet: %q", openOut.String())
		}
		return nil
	})
	if got, err := exec.Command(bin, "service", "off", root, "quicksilver_localservice").CombinedOutput(); err != nil {
		t.Fatalf("service off quicksilver_localservice: %v %s", err, got)
	}
	select {
	case err := <-openDone:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitFailure || !strings.Contains(openOut.String(), "membership ended") {
			t.Fatalf("open when the QSM service stopped: %v, want exit %d saying the membership ended:\n%s", err, exitFailure, openOut.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("open did not end when the QSM service stopped:\n%s", openOut.String())
	}
	waitFor(t, 20*time.Second, func() error {
		if b, _ := os.ReadFile(errOut); !strings.Contains(string(b), "Input/output error") {
			return fmt.Errorf("the reader of qsm/chat did not end with EIO when the QSM service stopped: %q", b)
		}
		return nil
	})
	attr, err := sh(t, "getfattr --only-values -n user.liveobject.error "+mnt+"/qsm/chat.liveobject")
	if err != nil || !strings.Contains(attr, "membership ended") || !strings.Contains(attr, "local QSM service lost") || !strings.Contains(attr, "open the object again") {
		t.Fatalf("the error attribute after the QSM service stopped: %q %v", attr, err)
	}
	if got, err := exec.Command(bin, "service", "on", root, "quicksilver_localservice").CombinedOutput(); err != nil {
		t.Fatalf("service on quicksilver_localservice: %v %s", err, got)
	}
	again := filepath.Join(dir, "again.out")
	waitFor(t, 20*time.Second, func() error {
		got, err := sh(t, fmt.Sprintf(`cd %s && (timeout 10 cat qsm/chat.liveobject > %s 2>&1 &)
for i in $(seq 1 20); do echo "after restart" >> qsm/chat.liveobject 2>/dev/null; grep -q "after restart" %s && break; sleep 0.1; done; cat %s`,
			mnt, again, again, again))
		if err != nil || !strings.Contains(got, "after restart") {
			return fmt.Errorf("qsm/chat after the QSM service came back: %q %v", got, err)
		}
		return nil
	})
}

// rootWithServices writes a fresh root in dir with the named services
// switched on. Its QSM and micro-object services get ports of this test's
// own, so that it can run beside others, and the QSM roles get keyFile as
// their key_file (a file that may not exist yet). It returns the root and
// the ports that replace each default (60100, 60200, 60300, 61000).
func rootWithServices(t *testing.T, dir, keyFile string, services ...string) (string, map[string]string) {
	t.Helper()
	root := filepath.Join(dir, "root")
	if out, err := exec.Command(bin, "init", root).CombinedOutput(); err != nil {
		t.Fatalf("init: %v %s", err, out)
	}
	for _, s := range services {
		if out, err := exec.Command(bin, "service", "on", root, s).CombinedOutput(); err != nil {
			t.Fatalf("service on %s: %v %s", s, err, out)
		}
	}
	ports := map[string]string{}
	for _, def := range []string{"60100", "60300", "61000"} {
		_, ports[def], _ = net.SplitHostPort(freePort(t))
	}
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, ports["60200"], _ = net.SplitHostPort(udp.LocalAddr().String())
	udp.Close()
	gms := regexp.MustCompile(`(<Parameter name="gms_address" value="[^"]*" />)`)
	editRegistry(t, root, func(s string) string {
		for from, to := range ports {
			s = strings.ReplaceAll(s, from, to)
		}
		return gms.ReplaceAllString(s, `$1<Parameter name="key_file" value="`+keyFile+`" />`)
	})
	return root, ports
}

// editRegistry rewrites the definitions in root's registry/ with edit,
// as a user edits settings; a file edit leaves as it is is not written.
func editRegistry(t *testing.T, root string, edit func(string) string) {
	t.Helper()
	err := filepath.Walk(filepath.Join(root, "registry"), func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if s := edit(string(b)); s != string(b) {
			return os.WriteFile(p, []byte(s), 0o644)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// mountDaemon starts a relay and a mount daemon (liveobjects mount) of a
// fresh root, as processes of their own, and returns once the mount is in
// the mount table (which is read without touching the mount).
func mountDaemon(t *testing.T) (root, addr, mnt string, d *daemon) {
	t.Helper()
	needFUSE(t)
	dir := t.TempDir()
	root = filepath.Join(dir, "root")
	if out, err := exec.Command(bin, "init", root).CombinedOutput(); err != nil {
		t.Fatalf("init: %v %s", err, out)
	}
	addr = freePort(t)
	startRelay(t, addr, "--root", root)
	mnt = filepath.Join(dir, "live")
	d = start(t, mnt, "mount", "--relay", addr, root, mnt)
	waitFor(t, 20*time.Second, func() error {
		if !mounted(mnt) {
			return fmt.Errorf("not mounted yet")
		}
		return nil
	})
	return root, addr, mnt, d
}

// TestKilledDaemonRemount: SIGKILL of a mount daemon leaves a stale
// mountpoint; a new mount on it recovers.
func TestKilledDaemonRemount(t *testing.T) {
	root, addr, mnt, d := mountDaemon(t)
	d.cmd.Process.Kill()
	select {
	case err := <-d.done:
		d.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		// One of its threads waits for its own mount to answer a
		// request: a forced unmount aborts the connection, so that it
		// can exit and the test clean up.
		exec.Command("umount", "-f", mnt).Run()
		t.Fatal("the killed daemon did not exit within 10s: a thread of it waits on a request to its own mount")
	}
	stale := false
	if _, err := os.Stat(mnt); errors.Is(err, syscall.ENOTCONN) {
		stale = true
	}
	d2 := start(t, mnt, "mount", "--relay", addr, root, mnt)
	waitFor(t, 20*time.Second, func() error {
		out, err := sh(t, "ls "+mnt+"/channels")
		if err != nil || !strings.Contains(out, "chat.liveobject") {
			return fmt.Errorf("new mount not serving: %q %v", out, err)
		}
		return nil
	})
	out, err := sh(t, "cd "+mnt+" && echo after-kill >> channels/chat.liveobject && (timeout 2 cat channels/chat.liveobject; true)")
	if err != nil || !strings.Contains(out, "after-kill") {
		t.Fatalf("remounted chat: %q %v", out, err)
	}
	if stale && !strings.Contains(d2.output(), "left by a daemon that died") {
		t.Fatalf("the stale mountpoint was recovered without saying so:\n%s", d2.output())
	}
	if !stale {
		t.Log("the kernel had already dropped the mount; nothing stale to recover")
	}
}

// TestStoppedDaemon: a second mount over a mountpoint whose daemon is
// stopped (SIGSTOP) says that the daemon does not answer, instead of
// waiting for it forever, and umount detaches such a mountpoint.
func TestStoppedDaemon(t *testing.T) {
	root, addr, mnt, d := mountDaemon(t)
	if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Registered after start's cleanup, so run before it: the daemon
	// goes on and can be killed.
	t.Cleanup(func() { d.cmd.Process.Signal(syscall.SIGCONT) })

	// A command that waits for the daemon is killed after 30s (runCmd),
	// and its exit code then fails the check too.
	began := time.Now()
	wantRun(t, "", exitFailure, []string{"does not answer", "umount --lazy"}, "mount", "--relay", addr, root, mnt)
	if took := time.Since(began); took > 15*time.Second {
		t.Errorf("mount over a stopped daemon's mountpoint took %v, want at most 15s", took.Round(time.Millisecond))
	}
	began = time.Now()
	wantRun(t, "", exitOK, []string{"does not answer"}, "umount", mnt)
	if took := time.Since(began); took > 15*time.Second {
		t.Errorf("umount of a stopped daemon's mountpoint took %v, want at most 15s", took.Round(time.Millisecond))
	}
	if mounted(mnt) {
		t.Fatal("umount left the stopped daemon's mountpoint mounted")
	}
}

// TestUmount: umount unmounts a mount of live objects (and its daemon
// ends), and leaves alone, with exit 1 and a message that says why, a
// folder where nothing is mounted and a mount of something else.
func TestUmount(t *testing.T) {
	_, _, mnt, d := mountDaemon(t)
	wantRun(t, "", exitOK, nil, "umount", mnt)
	if mounted(mnt) {
		t.Fatal("umount left the live mount mounted")
	}
	select {
	case err := <-d.done:
		d.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatalf("the daemon did not end within 10s of its mount's unmount:\n%s", d.output())
	}

	other := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "none", other).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", other).Run() })
	for _, tc := range []struct{ dir, want string }{
		{mnt, "nothing is mounted there"},
		{filepath.Join(t.TempDir(), "none"), "nothing is mounted there"},
		{other, "is not live objects (it is tmpfs"},
	} {
		wantRun(t, "", exitFailure, []string{tc.want}, "umount", tc.dir)
	}
	if b, _ := os.ReadFile("/proc/mounts"); !strings.Contains(string(b), " "+other+" tmpfs") {
		t.Error("umount unmounted a tmpfs")
	}
}

// TestUpRefusesAFolderThatHoldsFiles: up on a mountpoint that holds files
// fails before it starts any service, naming a file and the flag that
// allows it; up on a file fails before it starts any service too.
func TestUpRefusesAFolderThatHoldsFiles(t *testing.T) {
	dir := t.TempDir()
	mnt := filepath.Join(dir, "live")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "notes.txt"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if mounted(mnt) {
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	_, stderr := wantRun(t, "", exitFailure, []string{"not empty", "notes.txt", "--allow-non-empty"},
		"up", "--root", filepath.Join(dir, "root"), "--listen", "127.0.0.1:0", mnt)
	if strings.Contains(stderr, "relay listening") || mounted(mnt) {
		t.Fatalf("up started its services or mounted anyway:\n%s", stderr)
	}
	// Nor a file, with or without --allow-non-empty.
	file := filepath.Join(mnt, "notes.txt")
	for _, extra := range [][]string{nil, {"--allow-non-empty"}} {
		args := append([]string{"up", "--root", filepath.Join(dir, "root"), "--listen", "127.0.0.1:0"}, extra...)
		_, stderr = wantRun(t, "", exitFailure, []string{file + " is a file, not a folder"}, append(args, file)...)
		if strings.Contains(stderr, "relay listening") {
			t.Fatalf("up %v started its services for a file as mountpoint:\n%s", extra, stderr)
		}
	}
}

// TestOpenOutsideAMount: open (or shortcut) of a file that is not a live
// object of a mount (a definition on disk) fails with a message that says
// so, instead of printing the file (or making a shortcut that fails);
// open of a broken definition in a mount says what is wrong with it.
func TestOpenOutsideAMount(t *testing.T) {
	def := filepath.Join(t.TempDir(), "chat.liveobject")
	if err := os.WriteFile(def, []byte("<Root />\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if stdout, _ := wantRun(t, "", exitFailure, []string{"is not a live object of a mount"}, "open", def); stdout != "" {
		t.Errorf("open of a definition on disk printed %q, want nothing on stdout", stdout)
	}
	// Nor does shortcut make a shortcut that open would refuse.
	desk := t.TempDir()
	wantRun(t, "", exitFailure, []string{"is not a live object of a mount"}, "shortcut", def, desk)
	if ents, _ := os.ReadDir(desk); len(ents) != 0 {
		t.Errorf("shortcut of a definition on disk left %v", ents)
	}

	root, _, mnt, _ := mountDaemon(t)
	if err := os.WriteFile(filepath.Join(root, "examples", "broken.liveobject"), []byte("<Root><Object"), 0o644); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(mnt, "examples", "broken.liveobject")
	waitFor(t, 10*time.Second, func() error {
		_, err := sh(t, "test -e "+broken)
		return err
	})
	wantRun(t, "", exitFailure, []string{"definition is broken", "XML syntax"}, "open", broken)
}

// TestUpPortInUse: up whose relay's port is taken fails at once, saying
// so and how to take a free port, and mounts nothing.
func TestUpPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	mnt := filepath.Join(dir, "live")
	wantRun(t, "", exitFailure, []string{"address already in use", "liveobjects up --listen 127.0.0.1:0"},
		"up", "--root", filepath.Join(dir, "root"), "--listen", ln.Addr().String(), mnt)
	if mounted(mnt) {
		exec.Command("umount", "-l", mnt).Run()
		t.Fatal("up on a taken port mounted anyway")
	}
}

// TestCLIConventions: --help everywhere, exit codes, completion.
func TestCLIConventions(t *testing.T) {
	out, err := exec.Command(bin, "help").CombinedOutput()
	if err != nil {
		t.Fatalf("help: %v", err)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "  ") && len(strings.Fields(l)) > 1 {
			names = append(names, strings.Fields(l)[0])
		}
	}
	if len(names) < 5 {
		t.Fatalf("help lists %d commands:\n%s", len(names), out)
	}
	for name := range commands {
		args := append(strings.Fields(name), "--help")
		cmd := exec.Command(bin, args...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || strings.Count(string(out), "usage: liveobjects "+name+" ") != 1 || stderr.Len() != 0 {
			t.Errorf("%s --help: %v; want the help once on stdout and nothing on stderr\nstdout:\n%s\nstderr:\n%s", name, err, out, stderr.String())
		}
	}
	// A bad flag: named on stderr with the command's help, exit code 2.
	bad := exec.Command(bin, "pub", "--no-such-flag", "x")
	var badErr strings.Builder
	bad.Stderr = &badErr
	if err := bad.Run(); err == nil || bad.ProcessState.ExitCode() != exitUsage || !strings.Contains(badErr.String(), "no-such-flag") || !strings.Contains(badErr.String(), "usage: liveobjects pub") {
		t.Errorf("a bad flag: exit %d, stderr %q; want %d with the flag named and the help", bad.ProcessState.ExitCode(), badErr.String(), exitUsage)
	}
	// A bad value: said what is wrong, exit code 2.
	for _, args := range [][]string{
		{"bench", "udp-receive", "-group", "10.1.2.3"},
		{"qsm", "channels", "extra"},
	} {
		c := exec.Command(bin, args...)
		var stderr strings.Builder
		c.Stderr = &stderr
		if err := c.Run(); err == nil || c.ProcessState.ExitCode() != exitUsage || stderr.Len() == 0 {
			t.Errorf("%v: exit %d, stderr %q; want %d and why", args, c.ProcessState.ExitCode(), stderr.String(), exitUsage)
		}
	}
	// A root that is a file or is missing: said so, exit code 1.
	file := filepath.Join(t.TempDir(), "afile")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"up", "--root", file, filepath.Join(t.TempDir(), "m")}, "is a file, not a folder"},
		{[]string{"mount", file, filepath.Join(t.TempDir(), "m")}, "is a file, not a folder"},
		{[]string{"mount", filepath.Join(t.TempDir(), "none"), filepath.Join(t.TempDir(), "m")}, "does not exist; create one with 'liveobjects init"},
	} {
		c := exec.Command(bin, tc.args...)
		var stderr strings.Builder
		c.Stderr = &stderr
		if err := c.Run(); err == nil || c.ProcessState.ExitCode() != exitFailure || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, c.ProcessState.ExitCode(), stderr.String(), exitFailure, tc.want)
		}
	}
	cmd := exec.Command(bin, "no-such-command")
	if err := cmd.Run(); err == nil || cmd.ProcessState.ExitCode() != exitUsage {
		t.Errorf("unknown command exit code %d, want %d", cmd.ProcessState.ExitCode(), exitUsage)
	}
	comp, err := exec.Command(bin, "completion", "bash").Output()
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "c.bash")
	os.WriteFile(f, comp, 0o644)
	if out, err := exec.Command("bash", "-n", f).CombinedOutput(); err != nil {
		t.Fatalf("completion script is not valid bash: %v %s", err, out)
	}
	// The completion offers the commands.
	script := fmt.Sprintf("source %s; COMP_WORDS=(liveobjects mo); COMP_CWORD=1; _liveobjects; echo ${COMPREPLY[*]}", f)
	out, err = exec.Command("bash", "-c", script).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "mount") {
		t.Fatalf("completion of 'mo': %q %v", out, err)
	}
}

// desktopChecks: the MIME type lets a file manager type a live file by
// name without reading it (a pure stream would block a sniffer); a
// shortcut opens an object.
func desktopChecks(t *testing.T, mnt string) {
	xdg := filepath.Join(t.TempDir(), "xdg")
	env := append(os.Environ(), "XDG_DATA_HOME="+xdg)
	cmd := exec.Command(bin, "desktop", "install")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("desktop install: %v %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(xdg, "mime", "packages", "liveobjects.xml")); err != nil {
		t.Fatal(err)
	}
	if _, err := sh(t, "touch "+mnt+"/channels/probe"); err != nil {
		t.Fatal(err)
	}
	if gio, err := exec.LookPath("gio"); err == nil {
		if _, err := exec.LookPath("update-mime-database"); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c := exec.CommandContext(ctx, gio, "info", "-a", "standard::content-type", mnt+"/channels/probe.liveobject")
			c.Env = env
			out, err := c.CombinedOutput()
			cancel()
			if err != nil || !strings.Contains(string(out), "application/x-liveobject") {
				t.Fatalf("gio could not type a pure stream by name (a file manager would hang): %v %s", err, out)
			}
		}
	} else {
		t.Log("gio is not installed: the file-manager typing check did not run")
	}
	sdir := t.TempDir()
	out, err := exec.Command(bin, "shortcut", mnt+"/channels/chat.liveobject", sdir).CombinedOutput()
	if err != nil {
		t.Fatalf("shortcut: %v %s", err, out)
	}
	entry, err := os.ReadFile(filepath.Join(sdir, "chat.desktop"))
	if err != nil || !strings.Contains(string(entry), " open \""+mnt+"/channels/chat.liveobject\"") {
		t.Fatalf("shortcut entry: %v\n%s", err, entry)
	}
	// A shortcut to another object of the same name keeps the first one
	// and takes the next free name; the same shortcut again is the same
	// file.
	for _, c := range []struct{ obj, file string }{
		{"examples/chat.liveobject", "chat (2).desktop"},
		{"channels/chat.liveobject", "chat.desktop"},
		{"examples/chat.liveobject", "chat (2).desktop"},
	} {
		out, err := exec.Command(bin, "shortcut", mnt+"/"+c.obj, sdir).CombinedOutput()
		if err != nil || string(out) != filepath.Join(sdir, c.file)+"\n" {
			t.Fatalf("shortcut %s: want %s: %v %s", c.obj, c.file, err, out)
		}
		b, err := os.ReadFile(filepath.Join(sdir, c.file))
		if err != nil || !strings.Contains(string(b), " open \""+mnt+"/"+c.obj+"\"") {
			t.Fatalf("shortcut %s in %s: %v\n%s", c.obj, c.file, err, b)
		}
	}
	if ents, _ := os.ReadDir(sdir); len(ents) != 2 {
		t.Fatalf("shortcuts: %d files, want 2", len(ents))
	}
	// What the shortcut runs: the object's type, then its state.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out, _ = exec.CommandContext(ctx, bin, "open", mnt+"/channels/chat.liveobject").CombinedOutput()
	if !strings.Contains(string(out), "stream over relay") || !strings.Contains(string(out), "two") {
		t.Fatalf("open: %q", out)
	}
}

// loMulticast turns multicast on for the loopback interface for the
// test, and back off afterwards if it was off.
func loMulticast(t *testing.T) {
	out, err := exec.Command("ip", "link", "show", "lo").Output()
	if err != nil {
		t.Skipf("ip link: %v", err)
	}
	if strings.Contains(string(out), "MULTICAST") {
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("multicast on loopback is off and turning it on needs root: ip link set lo multicast on")
	}
	if err := exec.Command("ip", "link", "set", "lo", "multicast", "on").Run(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "set", "lo", "multicast", "off").Run() })
}

// TestUpAllServices: a root with every service switched on (relay, QSM
// coordinator and local service, micro-object server) serves channels over
// both drivers and distributed files, from one 'up'.
func TestUpAllServices(t *testing.T) {
	needFUSE(t)
	loMulticast(t)
	dir := t.TempDir()
	// QSM with a shared key.
	keyFile := filepath.Join(dir, "qsm.key")
	if err := os.WriteFile(keyFile, []byte("a secret of the test's own, 32 b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root, repl := rootWithServices(t, dir, keyFile, "mo", "quicksilver_localservice", "quicksilver_coordinator")
	t.Setenv("LIVEOBJECTS_MO_KEYS", filepath.Join(dir, "mo.keys")) // not the user's keys
	mnt := filepath.Join(dir, "live")
	d := start(t, mnt, "up", "--root", root, "--listen", "127.0.0.1:0", mnt)
	waitFor(t, 20*time.Second, func() error {
		out, err := sh(t, "cat "+mnt+"/services/*.liveobject")
		if err != nil || strings.Count(out, "state: running") != 4 {
			return fmt.Errorf("services: %v\n%s", err, out)
		}
		return nil
	})
	// The QSM local service's file says more than running: its link to
	// the coordinator and its clients (the mount's, attached).
	waitFor(t, 10*time.Second, func() error {
		out, err := sh(t, "cat "+mnt+"/services/quicksilver_localservice.liveobject")
		if err != nil || !strings.Contains(out, "coordinator: up\n") || !regexp.MustCompile(`(?m)^clients: \d+ \(\d+ attached\)$`).MatchString(out) {
			return fmt.Errorf("the QSM local service's status: %v\n%s", err, out)
		}
		return nil
	})
	// A channel over QSM.
	out, err := sh(t, fmt.Sprintf(`cd %s && (timeout 20 cat qsm/chat.liveobject > %s/q.out 2>&1 &)
for i in $(seq 1 100); do echo "over qsm $i" >> qsm/chat.liveobject 2>/dev/null; grep -q "over qsm" %s/q.out && break; sleep 0.1; done
echo "second" >> qsm/chat.liveobject
for i in $(seq 1 100); do grep -q second %s/q.out && break; sleep 0.1; done; cat %s/q.out`, mnt, dir, dir, dir, dir))
	if err != nil || !strings.Contains(out, "over qsm") || !strings.HasSuffix(out, "second\n") {
		t.Fatalf("qsm/ channel: %q %v", out, err)
	}
	// A text or a variable needs a total order and state transfer, which
	// QSM does not give: its channel in qsm/ is refused, and says why,
	// as the objects over QSM in examples/ are.
	for _, f := range []string{"qsm/Text_1.liveobject", "qsm/temperature.liveobject"} {
		out, err := sh(t, fmt.Sprintf("cd %s && timeout 5 cat %s 2>&1", mnt, f))
		if err == nil || !strings.Contains(out, "Operation not supported") {
			t.Fatalf("cat %s over QSM: %q %v", f, out, err)
		}
		out, err = sh(t, fmt.Sprintf("cd %s && echo 7 > %s", mnt, f))
		if err == nil || !strings.Contains(out, "Operation not supported") {
			t.Fatalf("echo > %s over QSM: %q %v", f, out, err)
		}
		attr, err := sh(t, fmt.Sprintf("getfattr --only-values -n user.liveobject.error %s/%s", mnt, f))
		if err != nil || !strings.Contains(attr, "needs total-order+state-transfer") || !strings.Contains(attr, "over qsm provides fifo") {
			t.Fatalf("the error attribute of %s: %q %v", f, attr, err)
		}
	}
	// The command line lists it, as the coordinator knows it: one node
	// (the mount's) has members in it.
	// QSM names the channel by its ID.
	id, err := sh(t, "getfattr --absolute-names --only-values -n user.liveobject.id "+mnt+"/qsm/chat.liveobject")
	if err != nil || id == "" {
		t.Fatalf("channel ID of qsm/chat: %q %v", id, err)
	}
	qsmOut, err := exec.Command(bin, "qsm", "channels", "-service", "127.0.0.1:"+repl["60100"]).CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^NAME +NODES$`).Match(qsmOut) ||
		!regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(id)+` +1$`).Match(qsmOut) {
		t.Fatalf("qsm channels: want %s on one node: %v\n%s", id, err, qsmOut)
	}
	// Without a service there, it says so and fails.
	if out, err := exec.Command(bin, "qsm", "channels", "-service", freePort(t)).CombinedOutput(); err == nil || !strings.Contains(string(out), "qsm service") {
		t.Fatalf("qsm channels with no service: %v\n%s", err, out)
	}
	// The mount's client is attached to the service its process hosts,
	// not linked through a socket: the service counts it as attached,
	// beside the stats command's own client, and counts the two events.
	statsOut, err := exec.Command(bin, "qsm", "stats", "-service", "127.0.0.1:"+repl["60100"], "--json").CombinedOutput()
	var st qsm.Stats
	if err != nil || json.Unmarshal(statsOut, &st) != nil || st.Clients != 2 || st.Attached != 1 || st.Published < 2 {
		t.Fatalf("qsm stats: want 2 clients, 1 attached, 2 or more published: %v\n%s", err, statsOut)
	}
	if out, err := exec.Command(bin, "qsm", "stats", "-service", "127.0.0.1:"+repl["60100"]).CombinedOutput(); err != nil ||
		!regexp.MustCompile(`(?m)^attached_clients +1$`).Match(out) {
		t.Fatalf("qsm stats as a table: %v\n%s", err, out)
	}
	// The coordinator holds the key: a service without it is refused,
	// and told why.
	_, intruderPort, _ := net.SplitHostPort(freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	intruder, _ := exec.CommandContext(ctx, bin, "qsm", "service", "-gms", "127.0.0.1:"+repl["60300"], "-port", intruderPort,
		"-set", "uplink_port=0", "-name", "intruder").CombinedOutput()
	if !strings.Contains(string(intruder), "not authorized") || !strings.Contains(string(intruder), "key_file") {
		t.Fatalf("a service without the key, against the root's coordinator:\n%s", intruder)
	}
	// An object that needs total order refuses QSM, saying why.
	if _, err := sh(t, "cat "+mnt+"/examples/shared_text_1.qsm.liveobject"); err == nil {
		t.Fatal("a text note joined a QSM channel")
	}
	// open says why, without first announcing the object as if it had
	// joined.
	if out, err := exec.Command(bin, "open", mnt+"/examples/shared_text_1.qsm.liveobject").CombinedOutput(); err == nil ||
		strings.Contains(string(out), "Ctrl-C to leave") || !strings.Contains(string(out), "needs total-order") {
		t.Fatalf("open of a text note over QSM: %v\n%s", err, out)
	}
	msg, _ := sh(t, "getfattr --only-values -n user.liveobject.error "+mnt+"/examples/shared_text_1.qsm.liveobject")
	if !strings.Contains(msg, "needs total-order") || !strings.Contains(msg, "over qsm provides fifo") {
		t.Fatalf("mismatch message: %q", msg)
	}
	// A distributed file.
	out, err = sh(t, "echo 'kept in micro objects' > "+mnt+"/files/note.txt && cat "+mnt+"/files/note.txt")
	if err != nil || out != "kept in micro objects\n" {
		t.Fatalf("files/: %q %v", out, err)
	}
	// The mo commands find the server 'up' runs for the default root
	// without --data, when none runs in the default data directory.
	moEnv := []string{"LIVEOBJECTS_ROOT=" + root, "XDG_DATA_HOME=" + filepath.Join(dir, "xdg"), "LIVEOBJECTS_MO_DATA="}
	note := filepath.Join(dir, "note.txt")
	if err := os.WriteFile(note, []byte("put without --data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, tok, stderr := runCmd(t, "", moEnv, "mo", "put", note)
	if code != exitOK {
		t.Fatalf("mo put without --data, beside up's server: exit %d: %s", code, stderr)
	}
	if code, got, stderr := runCmd(t, "", moEnv, "mo", "get", strings.TrimSpace(tok)); code != exitOK || got != "put without --data\n" {
		t.Fatalf("mo get without --data: exit %d, %q: %s", code, got, stderr)
	}
	// files/ follows the micro-object server: gone when it is switched
	// off, back with the file when it is switched on again.
	hasFiles := func() (bool, error) {
		out, err := sh(t, "ls "+mnt)
		return strings.Contains(out, "files\n"), err
	}
	for _, c := range []struct {
		sw   string
		want bool
	}{{"off", false}, {"on", true}} {
		if out, err := exec.Command(bin, "service", c.sw, root, "mo").CombinedOutput(); err != nil {
			t.Fatalf("service %s mo: %v %s", c.sw, err, out)
		}
		waitFor(t, 20*time.Second, func() error {
			if got, err := hasFiles(); err != nil || got != c.want {
				return fmt.Errorf("after service %s mo, files/ listed: %v (%v)", c.sw, got, err)
			}
			return nil
		})
	}
	waitFor(t, 20*time.Second, func() error {
		out, err := sh(t, "cat "+mnt+"/files/note.txt")
		if err != nil || out != "kept in micro objects\n" {
			return fmt.Errorf("files/note.txt after the server came back: %q %v", out, err)
		}
		return nil
	})
	qsmCoordinatorOffOn(t, mnt, root)
	qsmRestart(t, mnt, root, dir)
	// Ctrl-C stops every service and unmounts.
	d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-d.done:
		d.done <- err
		if err != nil {
			t.Fatalf("up with every service exited with %v after Ctrl-C", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("up with every service did not stop on Ctrl-C")
	}
	if mounted(mnt) {
		t.Fatal("up left its mount behind")
	}
}

// TestRelayKilledUnderMount: the relay is killed with SIGKILL while a
// mount streams a channel to cat and a script writes into it; the relay
// restarts on its durable log, the mount reconnects by itself, and cat
// sees every acknowledged line once, in order.
func TestRelayKilledUnderMount(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if out, err := exec.Command(bin, "init", root).CombinedOutput(); err != nil {
		t.Fatalf("init: %v %s", err, out)
	}
	addr := freePort(t)
	r1 := startRelay(t, addr, "--root", root)
	mnt := filepath.Join(dir, "live")
	start(t, mnt, "mount", "--relay", addr, root, mnt)
	waitFor(t, 20*time.Second, func() error {
		if !mounted(mnt) {
			return fmt.Errorf("not mounted yet")
		}
		return nil
	})
	out := filepath.Join(dir, "cat.out")
	reader := exec.Command("cat", mnt+"/channels/chat.liveobject")
	f, _ := os.Create(out)
	reader.Stdout = f
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Process.Kill(); reader.Wait(); f.Close() })
	time.Sleep(300 * time.Millisecond)

	// Lines a-1..a-200 before the kill; b-1..b-200 written while the relay
	// is down and restarting: each echo returns only once acknowledged.
	if o, err := sh(t, "for i in $(seq 1 200); do echo a-$i; done >> "+mnt+"/channels/chat.liveobject"); err != nil {
		t.Fatalf("writes before the kill: %v %s", err, o)
	}
	r1.cmd.Process.Kill()
	<-r1.done
	r1.done <- nil
	writer := exec.Command("bash", "-c", "for i in $(seq 1 200); do echo b-$i; done >> "+mnt+"/channels/chat.liveobject")
	var werr strings.Builder
	writer.Stderr = &werr
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	start(t, "", "relay", "--root", root, "--listen", addr)
	if err := writer.Wait(); err != nil {
		t.Fatalf("writes across the relay's restart: %v %s", err, werr.String())
	}
	waitFor(t, 20*time.Second, func() error {
		b, _ := os.ReadFile(out)
		if n := strings.Count(string(b), "\n"); n < 400 {
			return fmt.Errorf("cat has %d of 400 lines", n)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond) // anything more would be a duplicate
	b, _ := os.ReadFile(out)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 400 {
		t.Fatalf("cat saw %d lines, want 400 exactly once", len(lines))
	}
	next := map[byte]int{'a': 1, 'b': 1}
	for _, l := range lines {
		var n int
		fmt.Sscanf(l[2:], "%d", &n)
		if n != next[l[0]] {
			t.Fatalf("line %q out of order or duplicated (want %c-%d)", l, l[0], next[l[0]])
		}
		next[l[0]]++
	}
}

// showAndCheckOnMount: show and check given paths in a mount read the
// definitions on disk and never join (a pure stream would block them).
func showAndCheckOnMount(t *testing.T, mnt string) {
	for _, p := range []string{"channels/probe.liveobject", "examples/chat.liveobject"} {
		out, err := exec.Command(bin, "show", filepath.Join(mnt, p)).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "definition") && !strings.Contains(string(out), "<Metadata") {
			t.Fatalf("show %s on the mount: %v\n%s", p, err, out)
		}
	}
	out, err := exec.Command(bin, "check", mnt).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "is a mount of") {
		t.Fatalf("check on the mount: %v\n%s", err, out)
	}
}

// TestDaemonsStopOnCtrlC: every long-running command stops cleanly, with
// exit status 0, on SIGINT.
func TestDaemonsStopOnCtrlC(t *testing.T) {
	dir := t.TempDir()
	gms := freePort(t)
	for _, args := range [][]string{
		{"relay", "--memory", "--listen", "127.0.0.1:0"},
		{"relay", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "relay")},
		{"qsm", "coordinator", "-gms", gms},
		{"mo", "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "mo")},
	} {
		d := start(t, "", args...)
		waitFor(t, 10*time.Second, func() error {
			if !strings.Contains(d.output(), "listening") && !strings.Contains(d.output(), "ready") {
				return fmt.Errorf("%v not ready: %s", args, d.output())
			}
			return nil
		})
		d.cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-d.done:
			d.done <- err
			if err != nil {
				t.Fatalf("%v exited with %v after Ctrl-C:\n%s", args, err, d.output())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v did not stop on Ctrl-C", args)
		}
	}
}

// TestQSMRoleProcs: the standalone QSM roles run Go code on one CPU unless
// -procs or the GOMAXPROCS environment variable says otherwise.
func TestQSMRoleProcs(t *testing.T) {
	all := runtime.GOMAXPROCS(0) // Go's default here, unless the environment sets it
	if os.Getenv("GOMAXPROCS") != "" {
		all = runtime.NumCPU()
	}
	for _, c := range []struct {
		env  string
		args []string
		want string
	}{
		{"", nil, "procs=1"},
		{"", []string{"-procs", "2"}, "procs=2"},
		{"", []string{"-procs", "0"}, fmt.Sprintf("procs=%d", all)},
		{"3", nil, "procs=3"},
		{"3", []string{"-procs", "1"}, "procs=1"},
	} {
		t.Setenv("GOMAXPROCS", c.env)
		if c.env == "" {
			os.Unsetenv("GOMAXPROCS")
		}
		d := start(t, "", append([]string{"qsm", "coordinator", "-gms", freePort(t)}, c.args...)...)
		waitFor(t, 10*time.Second, func() error {
			if !strings.Contains(d.output(), "ready") {
				return fmt.Errorf("GOMAXPROCS=%q %v: not ready: %s", c.env, c.args, d.output())
			}
			return nil
		})
		if !regexp.MustCompile(`\b` + c.want + `\b`).MatchString(d.output()) {
			t.Errorf("GOMAXPROCS=%q %v: want %s in the ready line:\n%s", c.env, c.args, c.want, d.output())
		}
		d.cmd.Process.Kill()
	}
	if out, err := exec.Command(bin, "qsm", "service", "-procs", "-1").CombinedOutput(); err == nil || !strings.Contains(string(out), "want a number of CPUs") {
		t.Errorf("-procs -1: want a usage error saying what it takes: %v\n%s", err, out)
	}
}

// TestTwoRootsShareRelay: two mounts of two different roots (as on two
// machines) share one relay: a channel made from the shell on one shows
// up on the other, carries events between them, and goes away on both.
func TestTwoRootsShareRelay(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	addr := freePort(t)
	relayRoot := filepath.Join(dir, "relay-root")
	if out, err := exec.Command(bin, "init", relayRoot).CombinedOutput(); err != nil {
		t.Fatalf("init: %v %s", err, out)
	}
	startRelay(t, addr, "--root", relayRoot)
	var mnts []string
	for _, name := range []string{"a", "b"} {
		root := filepath.Join(dir, "root-"+name)
		if out, err := exec.Command(bin, "init", root).CombinedOutput(); err != nil {
			t.Fatalf("init: %v %s", err, out)
		}
		mnt := filepath.Join(dir, "live-"+name)
		start(t, mnt, "mount", "--relay", addr, root, mnt)
		waitFor(t, 20*time.Second, func() error {
			if !mounted(mnt) {
				return fmt.Errorf("%s not mounted yet", mnt)
			}
			return nil
		})
		mnts = append(mnts, mnt)
	}
	a, b := mnts[0], mnts[1]
	if out, err := sh(t, "touch "+a+"/channels/shared-news"); err != nil {
		t.Fatalf("touch: %v %s", err, out)
	}
	waitFor(t, 10*time.Second, func() error {
		_, err := os.Stat(b + "/channels/shared-news.liveobject")
		return err
	})
	out, err := sh(t, fmt.Sprintf(`(timeout 10 cat %s/channels/shared-news.liveobject > %s/b.out 2>&1 &)
for i in $(seq 1 50); do echo "from a $i" >> %s/channels/shared-news.liveobject; grep -q "from a" %s/b.out && break; sleep 0.1; done
cat %s/b.out`, b, dir, a, dir, dir))
	if err != nil || !strings.Contains(out, "from a") {
		t.Fatalf("an event from mount A did not reach mount B: %q %v", out, err)
	}
	if out, err := sh(t, "rm "+a+"/channels/shared-news.liveobject"); err != nil {
		t.Fatalf("rm: %v %s", err, out)
	}
	waitFor(t, 10*time.Second, func() error {
		if _, err := os.Stat(b + "/channels/shared-news.liveobject"); err == nil {
			return fmt.Errorf("still on mount B")
		}
		return nil
	})
}

// TestOpenEndsOnSignal: open, blocked reading a live file for its next
// event, exits at once on Ctrl-C (SIGINT) or SIGTERM.
func TestOpenEndsOnSignal(t *testing.T) {
	_, _, mnt, _ := mountDaemon(t)
	obj := filepath.Join(mnt, "examples", "temperature.liveobject")
	if out, err := sh(t, "echo 21.5 > "+obj); err != nil {
		t.Fatalf("set the variable: %v %s", err, out)
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		p := startProc(t, nil, false, "open", obj)
		waitFor(t, 10*time.Second, func() error {
			if out := p.stdout.String(); out != "21.5\n" {
				return fmt.Errorf("open printed %q so far", out)
			}
			return nil
		})
		time.Sleep(100 * time.Millisecond) // into the read that waits for the next value
		p.cmd.Process.Signal(sig)
		if code := p.exit(t, 5*time.Second); code != exitOK {
			t.Errorf("open after %v: exit %d, want 0; stderr:\n%s", sig, code, p.stderr.String())
		}
	}
}

// TestSecondInterrupt: a command that an interrupt does not end (here mo
// put, reading a stdin that never ends) says after a moment that it is
// still stopping, and a second Ctrl-C ends it at once.
func TestSecondInterrupt(t *testing.T) {
	p := startProc(t, []string{"LIVEOBJECTS_MO_DATA=" + t.TempDir()}, true, "mo", "put", "-")
	defer p.stdin.Close()
	if _, err := p.stdin.Write([]byte("some of it\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // past its start, into the read
	p.cmd.Process.Signal(syscall.SIGINT)
	waitFor(t, 10*time.Second, func() error {
		if !strings.Contains(p.stderr.String(), "still stopping; press Ctrl-C again") {
			return fmt.Errorf("no word after the first interrupt: %q", p.stderr.String())
		}
		return nil
	})
	select {
	case <-p.done:
		t.Fatal("mo put ended on the first interrupt: this test no longer tests a second one")
	default:
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	p.exit(t, 5*time.Second)
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGINT {
		t.Errorf("after the second interrupt: %v, want killed by SIGINT", p.cmd.ProcessState)
	}
}

// TestRootInAMount: a folder of a mount given where a root folder belongs
// is refused at once, naming the root on disk (reading it as a root would
// join every object in it and wait on them); show of a folder says it is
// one.
func TestRootInAMount(t *testing.T) {
	root, _, mnt, _ := mountDaemon(t)
	for _, args := range [][]string{
		{"check", filepath.Join(mnt, "examples")},
		{"show", "--root", filepath.Join(mnt, "examples"), filepath.Join(root, "examples", "chat.liveobject")},
		{"relay", "--root", filepath.Join(mnt, "channels"), "--listen", "127.0.0.1:0"},
	} {
		start := time.Now()
		wantRun(t, "", exitFailure, []string{"is in a live-objects mount", "give the root folder " + root + " instead"}, args...)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%v took %v to refuse", args, d)
		}
	}
	wantRun(t, "", exitFailure, []string{"Team Room is a folder; give the path of a .liveobject"}, "show", filepath.Join(mnt, "examples", "Team Room"))
	// The mount's top folder still stands for its root.
	wantRun(t, "", exitOK, []string{"is a mount of " + root + "; checking that root", "0 problems"}, "check", mnt)
}

// TestMountRelaySecretHint: a mount whose relay needs a secret it lacks,
// or has wrong, says in user.liveobject.error where the secret goes.
func TestMountRelaySecretHint(t *testing.T) {
	needFUSE(t)
	t.Setenv("LIVEOBJECTS_TEST_RELAY_SECRET", "s3cret")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if out, err := exec.Command(bin, "init", root).CombinedOutput(); err != nil {
		t.Fatalf("init: %v %s", err, out)
	}
	addr := freePort(t)
	startRelay(t, addr, "--root", root, "--secret-env", "LIVEOBJECTS_TEST_RELAY_SECRET")
	for i, tc := range []struct{ secret, want string }{
		{"", "no secret was sent: start the mount with the relay's shared secret in $LIVEOBJECTS_RELAY_SECRET"},
		{"wrong", "the secret in the mount's $LIVEOBJECTS_RELAY_SECRET is not the relay's"},
	} {
		t.Setenv("LIVEOBJECTS_RELAY_SECRET", tc.secret)
		mnt := filepath.Join(dir, fmt.Sprint("live", i))
		start(t, mnt, "mount", "--relay", addr, root, mnt)
		waitFor(t, 20*time.Second, func() error {
			if !mounted(mnt) {
				return fmt.Errorf("not mounted yet")
			}
			return nil
		})
		obj := filepath.Join(mnt, "channels", "chat.liveobject")
		if out, err := sh(t, "echo x >> "+obj); err == nil || !strings.Contains(out, "Permission denied") {
			t.Fatalf("secret %q: a write went through or failed otherwise: %q %v", tc.secret, out, err)
		}
		msg, _ := sh(t, "getfattr --only-values -n user.liveobject.error "+obj)
		if !strings.Contains(msg, tc.want) {
			t.Errorf("secret %q: user.liveobject.error %q, want %q in it", tc.secret, msg, tc.want)
		}
	}
}

// TestUpWithFailedService: a service of the root that cannot start (the
// QSM local service, given a key file that does not exist) does not stop
// up: the relay and the mount serve, the service's file in services/ says
// why it failed, and so does a qsm/ file that cannot be joined. Once the
// key file exists, the services start on their own.
func TestUpWithFailedService(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "qsm.key") // not written yet
	root, _ := rootWithServices(t, dir, keyFile, "quicksilver_localservice", "quicksilver_coordinator")
	mnt := filepath.Join(dir, "live")
	d := start(t, mnt, "up", "--root", root, "--listen", "127.0.0.1:0", mnt)
	waitFor(t, 20*time.Second, func() error {
		out, err := sh(t, "cat "+mnt+"/services/quicksilver_localservice.liveobject")
		if err != nil || !strings.Contains(out, "state: failed") || !strings.Contains(out, keyFile) {
			return fmt.Errorf("the failed service's status: %v\n%s\n%s", err, out, d.output())
		}
		return nil
	})
	// The relay and the mount serve.
	out, err := sh(t, fmt.Sprintf("cd %s && (timeout 10 head -n 1 channels/chat.liveobject > %s/chat.out 2>/dev/null &); for i in $(seq 50); do echo up >> channels/chat.liveobject; grep -q up %s/chat.out && break; sleep 0.1; done; cat %s/chat.out", mnt, dir, dir, dir))
	if err != nil || out != "up\n" {
		t.Fatalf("channels/chat beside a failed service: %q %v", out, err)
	}
	// A qsm/ file says why it cannot be joined.
	if _, err := sh(t, "cat "+mnt+"/qsm/chat.liveobject"); err == nil {
		t.Fatal("qsm/chat was joined with the local service failed")
	}
	attr, err := sh(t, "getfattr --only-values -n user.liveobject.error "+mnt+"/qsm/chat.liveobject")
	if err != nil || !strings.Contains(attr, "QSM local service") || !strings.Contains(attr, "failed") || !strings.Contains(attr, keyFile) {
		t.Fatalf("the error attribute of qsm/chat: %q %v", attr, err)
	}
	// Fixed: the services start on their own, and qsm/ works.
	if err := os.WriteFile(keyFile, []byte("a secret of the test's own, 32 b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() error {
		out, err := sh(t, fmt.Sprintf(`cd %s && (timeout 10 cat qsm/chat.liveobject > %s/q.out 2>&1 &)
for i in $(seq 1 20); do echo fixed >> qsm/chat.liveobject 2>/dev/null; grep -q fixed %s/q.out && break; sleep 0.1; done; cat %s/q.out`, mnt, dir, dir, dir))
		if err != nil || !strings.Contains(out, "fixed") {
			return fmt.Errorf("qsm/chat once the service was fixed: %q %v", out, err)
		}
		return nil
	})
}
