package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseTokens(t *testing.T) {
	got, err := parseTokens("tokens", strings.NewReader("# channel token\n\nchat  s3cret\n  ops\tother # not a comment here\n"))
	if err == nil || !strings.Contains(err.Error(), "tokens:4:") || !strings.Contains(err.Error(), "got 7 fields") {
		t.Fatalf("a line of four fields: %v %v", got, err)
	}
	got, err = parseTokens("tokens", strings.NewReader("# channel token\n\nchat  s3cret\n  ops\tother\n"))
	if err != nil || len(got) != 2 || got["chat"] != "s3cret" || got["ops"] != "other" {
		t.Fatalf("good file: %v %v", got, err)
	}
	_, err = parseTokens("tokens", strings.NewReader("chat a\nops b\nchat c\n"))
	if err == nil || !strings.Contains(err.Error(), "tokens:3:") || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("a channel named twice: %v", err)
	}
	_, err = parseTokens("tokens", strings.NewReader("chat "+strings.Repeat("x", 70<<10)+"\n"))
	if err == nil || !strings.Contains(err.Error(), "longer than 64 KiB") {
		t.Fatalf("an overlong line: %v", err)
	}
	if _, err := readTokens(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "read tokens") {
		t.Fatalf("missing file: %v", err)
	}
}

// FuzzParseTokens: any input gives tokens or an error naming the file, and
// every token read back is one whitespace-free field of a line.
func FuzzParseTokens(f *testing.F) {
	f.Add("chat s3cret\n# c\n\nops x\n")
	f.Add("a b c\n")
	f.Add("a b\na c\n")
	f.Add("\x00 \xff\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := parseTokens("F", strings.NewReader(in))
		if err != nil {
			if !strings.Contains(err.Error(), "F") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for ch, tok := range got {
			if ch == "" || tok == "" || strings.ContainsAny(ch+tok, " \t\n") || !strings.Contains(in, tok) {
				t.Fatalf("bad entry %q=%q from %q", ch, tok, in)
			}
		}
	})
}

// TestRelayTokensFile runs the relay with --tokens and no secret: pub with
// the channel's token gets in, pub without it or with a wrong one exits 1
// saying why, an open channel stays open, and a bad tokens file stops the
// relay at start with the file and line.
func TestRelayTokensFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens")
	if err := os.WriteFile(file, []byte("# guarded channels\nsecret-chat tok123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	d := start(t, "", "relay", "--memory", "--listen", addr, "--tokens", file)
	waitFor(t, 10*time.Second, func() error {
		if !strings.Contains(d.output(), "listening") {
			return fmt.Errorf("relay not listening yet")
		}
		return nil
	})
	pub := func(channel, token, line string) (string, int) {
		args := []string{"pub", "--relay", addr, "--seq", channel}
		if token != "" {
			args = append(args, "--token", token)
		}
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "LIVEOBJECTS_RELAY_SECRET=")
		cmd.Stdin = strings.NewReader(line + "\n")
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	if out, code := pub("secret-chat", "", "no token"); code != exitFailure || !strings.Contains(out, "needs a token") {
		t.Fatalf("pub without the token: exit %d %q", code, out)
	}
	if out, code := pub("secret-chat", "wrong", "wrong token"); code != exitFailure || !strings.Contains(out, "wrong token") {
		t.Fatalf("pub with a wrong token: exit %d %q", code, out)
	}
	if out, code := pub("secret-chat", "tok123", "let in"); code != exitOK || strings.TrimSpace(out) != "1" {
		t.Fatalf("pub with the token: exit %d %q", code, out)
	}
	if out, code := pub("open-chat", "", "open"); code != exitOK || strings.TrimSpace(out) != "1" {
		t.Fatalf("pub to an open channel: exit %d %q", code, out)
	}
	// The guarded channel holds exactly the events let in.
	sub := exec.Command(bin, "sub", "--relay", addr, "--token", "tok123", "--count", "2", "secret-chat")
	sub.Env = append(os.Environ(), "LIVEOBJECTS_RELAY_SECRET=")
	var subOut bytes.Buffer
	sub.Stdout = &subOut
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	if out, code := pub("secret-chat", "tok123", "second"); code != exitOK || strings.TrimSpace(out) != "2" {
		t.Fatalf("second pub with the token: exit %d %q", code, out)
	}
	done := make(chan error, 1)
	go func() { done <- sub.Wait() }()
	select {
	case err := <-done:
		if err != nil || subOut.String() != "let in\nsecond\n" {
			t.Fatalf("sub with the token: %v %q", err, subOut.String())
		}
	case <-time.After(20 * time.Second):
		sub.Process.Kill()
		t.Fatalf("sub got no event: %q", subOut.String())
	}

	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("a x\nb y\na z\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "relay", "--memory", "--listen", freePort(t), "--tokens", bad)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	first, _ := bufio.NewReader(&stderr).ReadString('\n')
	if err == nil || cmd.ProcessState.ExitCode() != exitFailure || !strings.Contains(first, bad+":3:") {
		t.Fatalf("relay with a bad tokens file: %v %q", err, stderr.String())
	}
}
