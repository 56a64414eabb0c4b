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
		Args:    "bash|zsh",
		Words:   []string{"bash", "zsh"},
		Summary: "print a shell completion script",
		Help: `Load it in the current shell with
  source <(liveobjects completion bash)
or, for zsh,
  source <(liveobjects completion zsh)`,
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want one shell name, bash or zsh")
			}
			switch args[0] {
			case "bash":
				fmt.Fprint(os.Stdout, bashCompletion())
			case "zsh":
				fmt.Fprint(os.Stdout, zshPrelude+bashCompletion())
			default:
				return usagef("unknown shell %q (want bash or zsh)", args[0])
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

// flagValueCases returns the bash case branches, on the word before the
// one being completed, that complete the value of fs's flags that take
// one: the command's FlagWords or the Value's own words, environment
// variable names after "...-env", nothing after a number, file names
// otherwise. Boolean flags take no value and get none.
func flagValueCases(c *command, fs *flag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			return
		}
		words := c.FlagWords[f.Name]
		if vw, ok := f.Value.(valueWords); ok && words == nil {
			words = vw.completionWords()
		}
		reply := `$(compgen -f -- "$cur")`
		switch {
		case len(words) > 0:
			reply = fmt.Sprintf(`$(compgen -W "%s" -- "$cur")`, strings.Join(words, " "))
		case strings.HasSuffix(f.Name, "-env"):
			reply = `$(compgen -e -- "$cur")`
		case isNumber(f.Value):
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

// bashCompletion writes a completion function from the registered
// commands: first words, second words of nested commands, and each
// command's flags, the values of its flags (see flagValueCases), the
// words of commands that take a fixed set (Words); paths otherwise.
// Global flags (-v, -q) before the command are skipped, and "help"
// completes command names.
func bashCompletion() string {
	first := map[string]bool{}
	groups := map[string][]string{}
	for _, n := range sortedNames() {
		w := strings.Fields(n)
		first[w[0]] = true
		if len(w) > 1 {
			groups[w[0]] = append(groups[w[0]], w[1])
		}
	}
	var firsts, gnames []string
	for w := range first {
		firsts = append(firsts, w)
	}
	for g := range groups {
		gnames = append(gnames, g)
	}
	sort.Strings(firsts)
	sort.Strings(gnames)
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
