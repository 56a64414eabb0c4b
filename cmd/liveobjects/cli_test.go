package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// wantRun runs the binary and checks its exit code and that stderr holds
// each of want.
func wantRun(t *testing.T, stdin string, code int, want []string, args ...string) (stdout, stderr string) {
	t.Helper()
	got, stdout, stderr := runCmd(t, stdin, nil, args...)
	if got != code {
		t.Errorf("%v: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, got, code, stdout, stderr)
		return stdout, stderr
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("%v: stderr lacks %q:\n%s", args, w, stderr)
		}
	}
	return stdout, stderr
}

// TestCommandGroups: the first word of nested commands (mo, qsm, bench,
// service, desktop) lists its commands: on stdout with exit 0 when help
// is asked for, on stderr with exit 2 otherwise; help of a command that
// does not exist is a usage error.
func TestCommandGroups(t *testing.T) {
	for _, g := range []string{"mo", "qsm", "bench", "service", "desktop"} {
		sub := groupCommands(g)
		if len(sub) == 0 {
			t.Fatalf("no commands in group %s", g)
		}
		for _, args := range [][]string{{g, "--help"}, {g, "-h"}, {"help", g}} {
			stdout, stderr := wantRun(t, "", exitOK, nil, args...)
			if !strings.Contains(stdout, sub[0]) || stderr != "" {
				t.Errorf("%v: want %q listed on stdout and nothing on stderr\nstdout:\n%s\nstderr:\n%s", args, sub[0], stdout, stderr)
			}
		}
		wantRun(t, "", exitUsage, []string{"want one of its commands", sub[0]}, g)
		wantRun(t, "", exitUsage, []string{`unknown command "` + g + ` bogus"`, sub[0]}, g, "bogus")
	}
	wantRun(t, "", exitUsage, []string{`unknown command "bogus"`}, "help", "bogus")
	wantRun(t, "", exitUsage, []string{"takes no arguments"}, "version", "extra")
}

// TestVersionFlag: --version and -version print what the version command
// prints, on stdout with exit 0.
func TestVersionFlag(t *testing.T) {
	want, _ := wantRun(t, "", exitOK, nil, "version")
	if !strings.HasPrefix(want, "liveobjects ") {
		t.Fatalf("version printed %q, want it to start with the name", want)
	}
	for _, flag := range []string{"--version", "-version"} {
		if got, stderr := wantRun(t, "", exitOK, nil, flag); got != want || stderr != "" {
			t.Errorf("%s: stdout %q, stderr %q; want %q and nothing on stderr", flag, got, stderr, want)
		}
	}
	wantRun(t, "", exitUsage, []string{"takes no arguments"}, "--version", "extra")
}

// TestCompletionWords: the completion script skips the global flags,
// completes the command after "help" and offers the shells of
// "completion"; the zsh script runs in zsh, and the fish script in fish
// (complete -C).
func TestCompletionWords(t *testing.T) {
	dir := t.TempDir()
	for _, shell := range []string{"bash", "zsh", "fish"} {
		path, err := exec.LookPath(shell)
		if err != nil {
			t.Logf("%s is not installed: its completion was not run", shell)
			continue
		}
		script, err := exec.Command(bin, "completion", shell).Output()
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "c."+shell)
		if err := os.WriteFile(f, script, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			words string
			want  []string
		}{
			{"liveobjects mo p", []string{"put", "policy"}},
			{"liveobjects -v mo ''", []string{"add", "serve"}},
			{"liveobjects -q check --m", []string{"--max"}},
			{"liveobjects mo put --", []string{"--keys", "--expire", "--timeout", "--help"}},
			{"liveobjects -", []string{"-v", "-q", "--version", "--help"}},
			{"liveobjects help q", []string{"qsm"}},
			{"liveobjects help bench ''", []string{"qsm", "udp-receive"}},
			{"liveobjects completion ''", []string{"bash", "zsh", "fish"}},
			{"liveobjects ''", []string{"mo", "help", "version"}},
			{"liveobjects bench qsm --mode ''", []string{"netns", "loopback", "auto"}},
			{"liveobjects -q qsm service --set k", []string{"key_file="}},
			{"liveobjects bench qsm --set mt", []string{"mtu="}},
			{"liveobjects relay --secret-env LIVEOBJECTS_COMPLETION_T", []string{"LIVEOBJECTS_COMPLETION_TEST"}},
			{"liveobjects qsm service --key-file ''", []string{"c." + shell}},
			{"liveobjects bench qsm --mtu ''", nil},
			{"liveobjects bench qsm --wire ''", []string{"c." + shell}}, // a boolean takes no value: files, as after the flags
		} {
			n := len(strings.Fields(tc.words)) - 1
			src := "source " + f + "; COMP_WORDS=(" + tc.words + "); COMP_CWORD=" + string(rune('0'+n)) + "; _liveobjects; echo \"${COMPREPLY[*]}\""
			cmd := exec.Command(path, "-c", src)
			if shell == "fish" {
				// The command line as typed, '' being the empty word at
				// the cursor; each offer's description cut off.
				line := strings.ReplaceAll(tc.words, "''", "")
				cmd = exec.Command(path, "--no-config", "-c", `source $argv[1]; complete -C $argv[2] | string replace -r '\t.*' ''`, f, line)
			}
			cmd.Env = append(os.Environ(), "HOME="+dir, "LIVEOBJECTS_COMPLETION_TEST=1")
			cmd.Dir = dir
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			got := strings.Fields(string(out))
			for _, w := range tc.want {
				if !contains(got, w) {
					t.Errorf("%s: completing %q offers %q (%v), want %q\nstderr: %s", shell, tc.words, got, err, w, stderr.String())
				}
			}
			if tc.want == nil && len(got) > 0 {
				t.Errorf("%s: completing %q offers %q, want nothing", shell, tc.words, got)
			}
			if stderr.Len() != 0 {
				t.Errorf("%s: completing %q wrote to stderr: %s", shell, tc.words, stderr.String())
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestUsageLine: a usage error ends with the command's synopsis, the same
// as --help begins with, with [flags] and no trailing space when the
// command takes no arguments.
func TestUsageLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"relay"}, "usage: liveobjects relay [flags]"},
		{[]string{"sub"}, "usage: liveobjects sub [flags] CHANNEL"},
	} {
		_, stderr := wantRun(t, "", exitUsage, nil, tc.args...)
		if !strings.HasSuffix(stderr, "\n"+tc.want+"\n") {
			t.Errorf("%v: stderr %q, want it to end with the line %q", tc.args, stderr, tc.want)
		}
		help, _ := wantRun(t, "", exitOK, nil, append(tc.args, "--help")...)
		if first, _, _ := strings.Cut(help, "\n"); first != tc.want {
			t.Errorf("%v --help: first line %q, want %q", tc.args, first, tc.want)
		}
	}
}

// TestBadValuesAreUsage: values a command cannot use are refused at once
// with exit 2, not taken silently as a default or found out after minutes.
func TestBadValuesAreUsage(t *testing.T) {
	dir := t.TempDir()
	big, data := filepath.Join(dir, "big"), filepath.Join(dir, "mo")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "qsm", "-mode", "loopback", "-loss", "150"}, "-loss: 150%"},
		{[]string{"bench", "qsm", "-mode", "loopback", "-repeat", "0"}, "-repeat"},
		{[]string{"bench", "qsm", "-mode", "loopback", "-link-rate", "-5"}, "-link-rate: -5 out of range"},
		{[]string{"bench", "qsm", "-mode", "loopback", "-link-rate", "1000"}, "-mode loopback has none"},
		{[]string{"bench", "mo", "--payload", "2000000"}, "more than a micro object holds"},
		{[]string{"mo", "put", "--data", data, "--timeout", "0", big}, "--timeout must be positive"},
		{[]string{"mo", "ls", "--data", data, "--timeout", "-1s"}, "--timeout must be positive"},
		{[]string{"mo", "serve", "--data", data, "--listen", "127.0.0.1:0", "--grace", "0"}, "--grace must be positive"},
		{[]string{"mo", "serve", "--data", data, "--listen", "127.0.0.1:0", "--flood-interval", "0"}, "--flood-interval"},
		{[]string{"mo", "serve", "--data", data, "--listen", "nonsense"}, "want host:port"},
		{[]string{"sub", "chat", "--relay"}, "flag needs an argument: -relay"},
		{[]string{"channels", "--relay"}, "flag needs an argument: -relay"},
	} {
		start := time.Now()
		wantRun(t, "", exitUsage, []string{tc.want, "usage: liveobjects"}, tc.args...)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%v took %v to refuse", tc.args, d)
		}
	}
}

// TestPathErrorsSayWhat: a root that is missing or a file, a service that
// does not exist, a file outside the root, a folder where an object file
// belongs, a file too large for a micro object: each is named, with what
// to do.
func TestPathErrorsSayWhat(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if code, _, stderr := runCmd(t, "", nil, "init", root); code != exitOK {
		t.Fatalf("init: %d %s", code, stderr)
	}
	file := filepath.Join(dir, "afile")
	os.WriteFile(file, []byte("x"), 0o644)
	missing := filepath.Join(dir, "none")
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, 2<<20), 0o644)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"service", "on", missing, "mo"}, []string{"does not exist; create one with 'liveobjects init"}},
		{[]string{"service", "off", file, "mo"}, []string{"is a file, not a folder"}},
		{[]string{"service", "on", root, "nosuch"}, []string{`no service "nosuch"`, "cc, mo, quicksilver_coordinator, quicksilver_localservice"}},
		{[]string{"check", file}, []string{"is a file, not a folder"}},
		{[]string{"show", "--root", missing, filepath.Join(root, "examples", "chat.liveobject")}, []string{"--root: root folder", "does not exist"}},
		{[]string{"show", "--root", root, file}, []string{file + " is not below the root " + root}},
		{[]string{"shortcut", root, dir}, []string{"is a folder, not an object file"}},
		{[]string{"open", root}, []string{"is a folder, not an object file"}},
		{[]string{"mo", "put", "--data", missing, big}, []string{"holds more than 1048512 bytes", "files/ folder"}},
		{[]string{"mo", "put", "--data", missing, root}, []string{"is a folder; give a file"}},
	} {
		_, stderr := wantRun(t, "", exitFailure, tc.want, tc.args...)
		if strings.Contains(stderr, "<nil>") {
			t.Errorf("%v: %s", tc.args, stderr)
		}
	}
	wantRun(t, strings.Repeat("x", 2<<20), exitFailure, []string{"stdin holds more than 1048512 bytes"}, "mo", "put", "--data", missing, "-")
}

// TestMOErrorsSayWhere: mo get of an object whose home server is gone
// names that server, and with no local server it names where it looked;
// mo serve and the QSM roles on an address in use say
// what holds it.
func TestMOErrorsSayWhere(t *testing.T) {
	dir := t.TempDir()
	env := []string{"LIVEOBJECTS_MO_KEYS=" + filepath.Join(dir, "keys")}
	serve := func(data string) *proc {
		p := startProc(t, env, false, "mo", "serve", "--listen", "127.0.0.1:0", "--data", data)
		waitFor(t, 10*time.Second, func() error {
			_, err := os.Stat(filepath.Join(data, "mo.addr"))
			return err
		})
		return p
	}
	local, home := filepath.Join(dir, "local"), filepath.Join(dir, "home")
	serve(local)
	h := serve(home)
	obj := filepath.Join(dir, "obj")
	os.WriteFile(obj, []byte("hello\n"), 0o644)
	code, tok, stderr := runCmd(t, "", env, "mo", "put", "--data", home, obj)
	if code != exitOK {
		t.Fatalf("mo put: %d %s", code, stderr)
	}
	tok = strings.TrimSpace(tok)
	addr, _ := os.ReadFile(filepath.Join(home, "mo.addr"))
	h.cmd.Process.Kill()
	<-h.done
	if code, out, stderr := runCmd(t, "", env, "mo", "get", "--data", local, tok); code != exitFailure ||
		!strings.Contains(stderr, "home server "+strings.TrimSpace(string(addr))) || !strings.Contains(stderr, "running and reachable") {
		t.Errorf("mo get with its home gone: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	// With no server where the commands look by default, they name
	// each place they looked and what to start.
	none := append(env, "XDG_DATA_HOME="+filepath.Join(dir, "xdg"), "LIVEOBJECTS_ROOT="+filepath.Join(dir, "root"), "LIVEOBJECTS_MO_DATA=")
	if code, out, stderr := runCmd(t, "", none, "mo", "get", tok); code != exitFailure || out != "" ||
		!strings.Contains(stderr, filepath.Join(dir, "xdg", "liveobjects", "mo", "mo.sock")+": connect: no such file") ||
		!strings.Contains(stderr, filepath.Join(dir, "root", ".state", "mo", "mo.sock")+": connect: no such file") ||
		!strings.Contains(stderr, "'liveobjects service on mo'") {
		t.Errorf("mo get with no server: exit %d, stdout %q, stderr %q", code, out, stderr)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().String()
	wantRun(t, "", exitFailure, []string{"address already in use", "is another 'mo serve' running?"}, "mo", "serve", "--listen", busy, "--data", filepath.Join(dir, "third"))
	wantRun(t, "", exitFailure, []string{"address already in use", "is a qsm coordinator already running?"}, "qsm", "coordinator", "-gms", busy)
	// Something that listens and never answers: a bounded wait and a hint.
	start := time.Now()
	wantRun(t, "", exitFailure, []string{"does not answer as a QSM service"}, "qsm", "channels", "-service", busy)
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("qsm channels waited %v for a silent address", d)
	}
}

// TestMOLsUnreachableHome: mo ls of a cluster the local server has no copy
// of, while the object's home server is down, fails and names that server;
// an empty cluster the local server knows (its home answered, or it holds
// a copy) lists nothing and succeeds.
func TestMOLsUnreachableHome(t *testing.T) {
	dir := t.TempDir()
	env := []string{"LIVEOBJECTS_MO_KEYS=" + filepath.Join(dir, "keys")}
	serve := func(data string) *proc {
		p := startProc(t, env, false, "mo", "serve", "--listen", "127.0.0.1:0", "--data", data)
		waitFor(t, 10*time.Second, func() error {
			_, err := os.Stat(filepath.Join(data, "mo.addr"))
			return err
		})
		return p
	}
	run := func(args ...string) (int, string, string) {
		t.Helper()
		return runCmd(t, "", env, args...)
	}
	local, home := filepath.Join(dir, "local"), filepath.Join(dir, "home")
	serve(local)
	h := serve(home)
	put := func(name string) string {
		t.Helper()
		f := filepath.Join(dir, name)
		os.WriteFile(f, []byte(name+"\n"), 0o644)
		code, tok, stderr := run("mo", "put", "--data", home, f)
		if code != exitOK {
			t.Fatalf("mo put %s: %d %s", name, code, stderr)
		}
		return strings.TrimSpace(tok)
	}
	parent, child, empty := put("parent"), put("child"), put("empty")
	if code, _, stderr := run("mo", "add", "--data", home, parent, child); code != exitOK {
		t.Fatalf("mo add: %d %s", code, stderr)
	}
	if code, out, stderr := run("mo", "ls", "--data", home, parent); code != exitOK || strings.TrimSpace(out) != child {
		t.Fatalf("mo ls on the home: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	// Home reachable, cluster empty: nothing to list, no error.
	if code, out, stderr := run("mo", "ls", "--data", local, empty); code != exitOK || out != "" {
		t.Errorf("mo ls of an empty cluster, home up: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	addr, _ := os.ReadFile(filepath.Join(home, "mo.addr"))
	h.cmd.Process.Kill()
	<-h.done

	// The local server never saw parent's cluster and cannot reach its home.
	code, out, stderr := run("mo", "ls", "--data", local, parent)
	if code != exitFailure || out != "" ||
		!strings.Contains(stderr, "home server "+strings.TrimSpace(string(addr))) ||
		!strings.Contains(stderr, "could not be reached") || !strings.Contains(stderr, "no local copy") ||
		strings.Contains(stderr, "listing the local copy") {
		t.Errorf("mo ls with its home gone and no local copy: exit %d, stdout %q, stderr %q (want the error alone, not a warning that a local copy is listed)", code, out, stderr)
	}
	// The local server holds a copy of the empty cluster: still exit 0,
	// with the warning that the local copy is what is listed.
	if code, out, stderr := run("mo", "ls", "--data", local, empty); code != exitOK || out != "" || !strings.Contains(stderr, "listing the local copy") {
		t.Errorf("mo ls of a known empty cluster, home gone: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// TestBenchQSMProfiles: bench qsm writes the CPU and allocation profiles
// it is asked for (gzipped protocol buffers, as 'go tool pprof' reads),
// next to its table.
func TestBenchQSMProfiles(t *testing.T) {
	dir := t.TempDir()
	cpu, mem := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "mem.pprof")
	stdout, _ := wantRun(t, "", exitOK, nil, "bench", "qsm", "-mode", "loopback", "-count", "2000", "-groups", "1",
		"-loss", "-1", "-repeat", "1", "-cpuprofile", cpu, "-memprofile", mem)
	if !strings.Contains(stdout, "| QSM, 1 group(s) |") {
		t.Fatalf("no QSM row in the table:\n%s", stdout)
	}
	for _, f := range []string{cpu, mem} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < 100 || b[0] != 0x1f || b[1] != 0x8b {
			t.Fatalf("%s: %d bytes, not a gzipped profile", f, len(b))
		}
	}
	// A path that cannot be written fails at once, before any measurement.
	wantRun(t, "", exitFailure, []string{"-cpuprofile"}, "bench", "qsm", "-mode", "loopback", "-cpuprofile", filepath.Join(dir, "none", "cpu"))
	_, stderr := wantRun(t, "", exitFailure, []string{"-memprofile"}, "bench", "qsm", "-mode", "loopback", "-memprofile", filepath.Join(dir, "none", "mem"))
	if strings.Contains(stderr, "round 1") {
		t.Fatalf("bench qsm measured before refusing the -memprofile path:\n%s", stderr)
	}
}
