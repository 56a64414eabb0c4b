package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

func init() {
	register(&command{
		Name:    "completion",
		Args:    "bash|zsh|fish",
		Words:   []string{"bash", "zsh", "fish"},
		Summary: "print a shell completion script",
		Help: `Load it in the current shell with
  source <(liveobjects completion bash)
or, for zsh,
  source <(liveobjects completion zsh)
or, for fish,
  liveobjects completion fish | source`,
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want one shell name: bash, zsh or fish")
			}
			switch args[0] {
			case "bash":
				fmt.Fprint(os.Stdout, bashCompletion())
			case "zsh":
				fmt.Fprint(os.Stdout, zshPrelude+bashCompletion())
			case "fish":
				fmt.Fprint(os.Stdout, fishCompletion())
			default:
				return usagef("unknown shell %q (want bash, zsh or fish)", args[0])
			}
			return nil
		},
	})
}

// zshPrelude loads what the bash completion function needs in zsh: the
// completion system (for compdef) unless the shell's startup files loaded
// it, and bash's complete and compgen.
const zshPrelude = `if ! (( $+functions[compdef] )); then autoload -U +X compinit && compinit; fi
autoload -U +X bashcompinit && bashcompinit
`

// valueWords is a flag.Value whose values shell completion can offer.
type valueWords interface {
	completionWords() []string
}

// flagValue is what shell completion offers as the value of a flag:
// nothing for a boolean flag (it takes no value) and for a number or a
// duration, the command's FlagWords or the Value's own words, environment
// variable names after "...-env", file names otherwise.
type flagValue struct {
	boolean bool
	words   []string
	env     bool
	number  bool
}

func flagValueOf(c *command, f *flag.Flag) flagValue {
	if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
		return flagValue{boolean: true}
	}
	words := c.FlagWords[f.Name]
	if vw, ok := f.Value.(valueWords); ok && words == nil {
		words = vw.completionWords()
	}
	return flagValue{words: words, env: strings.HasSuffix(f.Name, "-env"), number: isNumber(f.Value)}
}

// flagValueCases returns the bash case branches, on the word before the
// one being completed, that complete the value of fs's flags that take
// one (see flagValue).
func flagValueCases(c *command, fs *flag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		v := flagValueOf(c, f)
		if v.boolean {
			return
		}
		reply := `$(compgen -f -- "$cur")`
		switch {
		case len(v.words) > 0:
			reply = fmt.Sprintf(`$(compgen -W "%s" -- "$cur")`, strings.Join(v.words, " "))
		case v.env:
			reply = `$(compgen -e -- "$cur")`
		case v.number:
			reply = ""
		}
		fmt.Fprintf(&b, "-%s|--%s) COMPREPLY=(%s); return;; ", f.Name, f.Name, reply)
	})
	if b.Len() == 0 {
		return ""
	}
	return `case "$prev" in ` + b.String() + "esac; "
}

// isNumber reports whether a flag's value is a number or a duration.
func isNumber(v flag.Value) bool {
	g, ok := v.(flag.Getter)
	if !ok {
		return false
	}
	switch g.Get().(type) {
	case int, int64, uint, uint64, float64, time.Duration:
		return true
	}
	return false
}

// commandWords returns the first words of the commands, sorted; the
// second words of each nested command's first word (its group); and the
// groups' first words, sorted.
func commandWords() (firsts []string, groups map[string][]string, gnames []string) {
	first := map[string]bool{}
	groups = map[string][]string{}
	for _, n := range sortedNames() {
		w := strings.Fields(n)
		first[w[0]] = true
		if len(w) > 1 {
			groups[w[0]] = append(groups[w[0]], w[1])
		}
	}
	for w := range first {
		firsts = append(firsts, w)
	}
	for g := range groups {
		gnames = append(gnames, g)
	}
	sort.Strings(firsts)
	sort.Strings(gnames)
	return firsts, groups, gnames
}

// bashCompletion writes a completion function from the registered
// commands: first words, second words of nested commands, and each
// command's flags, the values of its flags (see flagValueCases), the
// words of commands that take a fixed set (Words); paths otherwise.
// Global flags (-v, -q) before the command are skipped, and "help"
// completes command names.
func bashCompletion() string {
	firsts, groups, gnames := commandWords()
	var b strings.Builder
	// The same function serves zsh through bashcompinit: ksharrays makes
	// its arrays count from 0 as bash's do, and line (not words, which
	// zsh's completion system owns) holds the command's words so far.
	b.WriteString(`_liveobjects() {
  if [ -n "${ZSH_VERSION:-}" ]; then setopt localoptions ksharrays; fi
  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" line="" w i=1
  while [ $i -lt $COMP_CWORD ]; do
    w="${COMP_WORDS[i]}"
    i=$((i+1))
    if [ -z "$line" ]; then
      case "$w" in -v|-q|--v|--q) continue;; esac
    fi
    line="$line${line:+ }$w"
  done
  case "$line" in
`)
	fmt.Fprintf(&b, "    \"\"|help) if [[ $cur == -* ]] && [ -z \"$line\" ]; then COMPREPLY=($(compgen -W \"-v -q --version --help\" -- \"$cur\")); else COMPREPLY=($(compgen -W \"%s help\" -- \"$cur\")); fi; return;;\n", strings.Join(firsts, " "))
	for _, n := range sortedNames() {
		c := commands[n]
		fs := flag.NewFlagSet(n, flag.ContinueOnError)
		if c.Flags != nil {
			c.Flags(fs)
		}
		var flags []string
		fs.VisitAll(func(f *flag.Flag) { flags = append(flags, "--"+f.Name) })
		flags = append(flags, "--help")
		other := `compgen -f -- "$cur"`
		if len(c.Words) > 0 {
			other = fmt.Sprintf(`compgen -W "%s" -- "$cur"`, strings.Join(c.Words, " "))
		}
		fmt.Fprintf(&b, "    \"%s\"|\"%s \"*) %sif [[ $cur == -* ]]; then COMPREPLY=($(compgen -W \"%s\" -- \"$cur\")); else COMPREPLY=($(%s)); fi; return;;\n",
			n, n, flagValueCases(c, fs), strings.Join(flags, " "), other)
	}
	for _, g := range gnames {
		fmt.Fprintf(&b, "    \"%s\"|\"help %s\") COMPREPLY=($(compgen -W \"%s\" -- \"$cur\")); return;;\n", g, g, strings.Join(groups[g], " "))
	}
	b.WriteString(`  esac
  COMPREPLY=($(compgen -f -- "$cur"))
}
complete -o filenames -F _liveobjects liveobjects
`)
	return b.String()
}

// fishCompletion writes fish completions from the registered commands, as
// bashCompletion does for bash: a condition on the command's words so far
// (the global flags -v and -q skipped) selects the words, flags and flag
// values offered; file names are offered where no rule says otherwise.
func fishCompletion() string {
	firsts, groups, gnames := commandWords()
	var b strings.Builder
	b.WriteString(`# fish completion for liveobjects: liveobjects completion fish | source
function __liveobjects_words --description 'the words of the liveobjects command line so far, after the global flags'
    set -l words (commandline -opc)
    set -e words[1]
    while set -q words[1]; and contains -- $words[1] -v -q --v --q
        set -e words[1]
    end
    string join \n -- $words
end
function __liveobjects_at --description 'true when the liveobjects command line so far starts with the words given'
    set -l words (__liveobjects_words)
    test (count $words) -ge (count $argv); or return 1
    for i in (seq (count $argv))
        test "$words[$i]" = "$argv[$i]"; or return 1
    end
end
function __liveobjects_is --description 'true when the liveobjects command line so far is the words given'
    set -l words (__liveobjects_words)
    test (count $words) -eq (count $argv); or return 1
    test (count $argv) -eq 0; or __liveobjects_at $argv
end
complete -c liveobjects -n '__liveobjects_is' -o v -d 'log debug messages'
complete -c liveobjects -n '__liveobjects_is' -o q -d 'log only errors'
complete -c liveobjects -n '__liveobjects_is' -l version -d 'print the version'
complete -c liveobjects -n '__liveobjects_is' -l help -d 'list the commands'
`)
	summary := func(w string) string {
		if c, ok := commands[w]; ok {
			return c.Summary
		}
		return "commands: " + strings.Join(groups[w], ", ")
	}
	for _, w := range firsts {
		fmt.Fprintf(&b, "complete -c liveobjects -n '__liveobjects_is' -f -a %s -d %s\n", fishQuote(w), fishQuote(summary(w)))
		fmt.Fprintf(&b, "complete -c liveobjects -n '__liveobjects_is help' -f -a %s -d %s\n", fishQuote(w), fishQuote(summary(w)))
	}
	fmt.Fprintf(&b, "complete -c liveobjects -n '__liveobjects_is' -f -a help -d 'show the help of a command'\n")
	for _, g := range gnames {
		for _, w := range groups[g] {
			for _, cond := range []string{g, "help " + g} {
				fmt.Fprintf(&b, "complete -c liveobjects -n '__liveobjects_is %s' -f -a %s -d %s\n", cond, fishQuote(w), fishQuote(commands[g+" "+w].Summary))
			}
		}
	}
	for _, n := range sortedNames() {
		c := commands[n]
		at := fmt.Sprintf("-n '__liveobjects_at %s'", n)
		if len(c.Words) > 0 {
			fmt.Fprintf(&b, "complete -c liveobjects %s -f -a %s\n", at, fishQuote(strings.Join(c.Words, " ")))
		}
		fs := flag.NewFlagSet(n, flag.ContinueOnError)
		if c.Flags != nil {
			c.Flags(fs)
		}
		fs.VisitAll(func(f *flag.Flag) {
			v := flagValueOf(c, f)
			value := "-r -F" // a file name
			switch {
			case v.boolean:
				value = ""
			case len(v.words) > 0:
				value = "-x -a " + fishQuote(strings.Join(v.words, " "))
			case v.env:
				value = "-x -a '(set -xn)'"
			case v.number:
				value = "-x"
			}
			usage, _, _ := strings.Cut(f.Usage, "\n")
			fmt.Fprintf(&b, "complete -c liveobjects %s -l %s %s -d %s\n", at, f.Name, value, fishQuote(usage))
		})
		fmt.Fprintf(&b, "complete -c liveobjects %s -l help -d 'show its help'\n", at)
	}
	return b.String()
}

// fishQuote quotes s as one word for fish.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
