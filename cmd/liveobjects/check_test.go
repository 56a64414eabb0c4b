package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/liveobjects/liveobjects/registry"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/golden from the current output")

// golden compares got with testdata/golden/name, or rewrites it.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("..", "..", "testdata", "golden", name)
	if *updateGolden {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update-golden to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s:\n--- got\n%s\n--- want\n%s", p, got, want)
	}
}

func exitCode(err error) int {
	var ee exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	}
	return exitFailure
}

func sampleRoot(name string) string { return filepath.Join("..", "..", "testdata", "roots", name) }

func TestCheckGolden(t *testing.T) {
	for _, tt := range []struct {
		root string
		code int
	}{{"sample", exitOK}, {"broken", exitProblems}} {
		t.Run(tt.root, func(t *testing.T) {
			var out bytes.Buffer
			err := runCheck(sampleRoot(tt.root), &out, &out, 0)
			if got := exitCode(err); got != tt.code {
				t.Errorf("exit code %d (%v), want %d", got, err, tt.code)
			}
			golden(t, "check_"+tt.root+".txt", out.Bytes())
		})
	}
	var out bytes.Buffer
	err := runCheck(sampleRoot("broken"), &out, &out, 2)
	if exitCode(err) != exitProblems || !strings.Contains(out.String(), "... and ") || strings.Count(out.String(), "\n") != 4 {
		t.Errorf("--max 2: %v\n%s", err, out.String())
	}
	if err := runCheck(filepath.Join(t.TempDir(), "none"), &out, &out, 0); exitCode(err) != exitFailure {
		t.Errorf("missing root: %v", err)
	}
}

func TestShowGolden(t *testing.T) {
	files := []string{
		"sample/examples/chat.liveobject",
		"sample/examples/shared_text.liveobject",
		"sample/examples/shared_text_1.qsm.liveobject",
		"sample/examples/temperature.liveobject",
		"sample/examples/advanced/every value.liveobject",
		"sample/examples/advanced/composite.liveobject",
		"sample/examples/advanced/virtually_synchronous.liveobject",
		"sample/examples/advanced/null.liveobject",
		"sample/examples/team chat (link).liveobject",
		"sample/services/cc.liveobject",
		"sample/registry/A11A5000000000000000000000000001/relay_alias.liveobject",
		"sample/channels/Team_Board/metadata.xml",
		"broken/examples/chat.liveobject",
		"broken/examples/cycle.liveobject",
		"broken/examples/syntax.liveobject",
		"broken/channels/0000000000000000000000000000000A/metadata.xml",
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			var out bytes.Buffer
			err := runShow(filepath.Join("..", "..", "testdata", "roots", filepath.FromSlash(f)), "", &out)
			if c := exitCode(err); c != exitOK && c != exitProblems {
				t.Fatalf("show: %v", err)
			}
			name := "show_" + strings.NewReplacer("/", "_", " ", "_").Replace(strings.TrimSuffix(strings.TrimSuffix(f, ".liveobject"), ".xml")) + ".txt"
			golden(t, name, out.Bytes())
		})
	}
	var out bytes.Buffer
	if err := runShow(filepath.Join(sampleRoot("sample"), "nope.liveobject"), "", &out); exitCode(err) != exitFailure {
		t.Errorf("missing file: %v", err)
	}
}

// TestInitCheckShow runs the commands as the user does: init, then check,
// then show, through the command table.
func TestInitCheckShow(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "root")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"init", dir}, &stdout, &stderr); code != exitOK {
		t.Fatalf("init: exit %d: %s", code, stderr.String())
	}
	if code := run([]string{"init", dir}, &stdout, &stderr); code != exitFailure || !strings.Contains(stderr.String(), "not empty") {
		t.Errorf("init twice: exit %d: %s", code, stderr.String())
	}
	var out bytes.Buffer
	if err := runCheck(dir, &out, &out, 0); err != nil {
		t.Fatalf("check after init: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "0 problems") {
		t.Errorf("check summary: %s", out.String())
	}
	// One broken file: one problem, counted in the singular.
	broken := filepath.Join(dir, "examples", "broken.liveobject")
	if err := os.WriteFile(broken, []byte("<Root><Object"), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err := runCheck(dir, &out, &out, 0)
	if exitCode(err) != exitProblems || err.Error() != "1 problem in "+dir || !strings.HasSuffix(out.String(), ", 1 problem\n") {
		t.Errorf("check with one broken file: %v\n%s", err, out.String())
	}
	if err := os.Remove(broken); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := runShow(filepath.Join(dir, "examples", "chat.liveobject"), "", &out); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"class: stream", "channel: chat", "driver: relay (address=127.0.0.1:60000", "history: 100", "join: ok", "resolution:", "definition:"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("show lacks %q:\n%s", s, out.String())
		}
	}
	for _, args := range [][]string{{"init", "--help"}, {"check", "--help"}, {"show", "--help"}, {"help", "check"}} {
		stdout.Reset()
		if code := run(args, &stdout, &stderr); code != exitOK || !strings.Contains(stdout.String(), "usage: liveobjects") {
			t.Errorf("%v: exit %d: %s", args, code, stdout.String())
		}
	}
	for _, args := range [][]string{{"show"}, {"check", "a", "b"}, {"init", "a", "b"}, {"service", "on"}, {"service", "off", "a", "b", "c"}} {
		if code := run(args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

// TestDefaultRoot: without ROOT, init, check and service on/off work on
// the root that up uses ($LIVEOBJECTS_ROOT here).
func TestDefaultRoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "root")
	env := []string{"LIVEOBJECTS_ROOT=" + dir}
	if code, _, stderr := runCmd(t, "", env, "check"); code != exitFailure || !strings.Contains(stderr, "liveobjects init "+dir) {
		t.Fatalf("check before init: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runCmd(t, "", env, "init"); code != exitOK || !strings.Contains(stderr, "to "+dir) {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	if code, stdout, stderr := runCmd(t, "", env, "check"); code != exitOK || !strings.Contains(stdout+stderr, "0 problems") {
		t.Fatalf("check: exit %d: %s%s", code, stdout, stderr)
	}
	mo := filepath.Join(dir, "services", "mo.liveobject")
	for _, c := range []struct {
		word string
		nil  bool
	}{{"on", false}, {"off", true}} {
		if code, stdout, stderr := runCmd(t, "", env, "service", c.word, "mo"); code != exitOK || stdout != "services/mo.liveobject: "+c.word+"\n" {
			t.Fatalf("service %s mo: exit %d: %q %s", c.word, code, stdout, stderr)
		}
		b, err := os.ReadFile(mo)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(b), `xsi:nil="true"`); got != c.nil {
			t.Errorf("after service %s mo, %s is a null object: %v\n%s", c.word, mo, got, b)
		}
	}
}

// TestCheckLargeRoot checks a generated root with hundreds of files, deep
// folders with spaces and many classes this project does not implement:
// every file is parsed, nothing crashes, the broken files are reported.
func TestCheckLargeRoot(t *testing.T) {
	dir := t.TempDir()
	if err := registry.Init(dir); err != nil {
		t.Fatal(err)
	}
	broken := 0
	for i := 0; i < 300; i++ {
		folder := filepath.Join(dir, "examples", strings.Repeat("Deep Folder/", i%7), "set "+string(rune('A'+i%26)))
		if err := os.MkdirAll(folder, 0o755); err != nil {
			t.Fatal(err)
		}
		content := `<Root xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><Object xsi:type="ReferenceObject" id="` +
			strings.Repeat("AB", 12) + string("01234567"[i%8]) + `2345678"><Parameter id="n"><Value xsi:type="xsd:int">1</Value></Parameter></Object></Root>`
		if i%50 == 0 {
			content = content[:40]
			broken++
		}
		name := filepath.Join(folder, "object number "+string(rune('a'+i%26))+string(rune('0'+i%10))+".liveobject")
		if _, err := os.Stat(name); err == nil {
			continue
		}
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	err := runCheck(dir, &out, &out, 0)
	if exitCode(err) != exitProblems {
		t.Fatalf("exit %d: %v", exitCode(err), err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != broken+1 || !strings.Contains(lines[len(lines)-1], "problems") {
		t.Errorf("want %d problems and a summary:\n%s", broken, out.String())
	}
}
