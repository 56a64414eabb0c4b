package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

func init() {
	register(&command{
		Name:    "completion",
		Args:    "bash|zsh",
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
				fmt.Fprint(os.Stdout, "autoload -U +X bashcompinit && bashcompinit\n"+bashCompletion())
			default:
				return usagef("unknown shell %q (want bash or zsh)", args[0])
			}
			return nil
		},
	})
}

// bashCompletion writes a completion function from the registered
// commands: first words, second words of nested commands, and each
// command's flags; paths otherwise.
func bashCompletion() string {
	first := map[string]bool{}
	second := map[string][]string{}
	for _, n := range sortedNames() {
		w := strings.Fields(n)
		first[w[0]] = true
		if len(w) > 1 {
			second[w[0]] = append(second[w[0]], w[1])
		}
	}
	var firsts []string
	for w := range first {
		firsts = append(firsts, w)
	}
	sort.Strings(firsts)
	var b strings.Builder
	b.WriteString("_liveobjects() {\n  local cur=${COMP_WORDS[COMP_CWORD]}\n  local words=\"${COMP_WORDS[*]:1:COMP_CWORD-1}\"\n")
	b.WriteString("  if [ $COMP_CWORD -eq 1 ]; then COMPREPLY=($(compgen -W \"" + strings.Join(firsts, " ") + " help\" -- \"$cur\")); return; fi\n")
	b.WriteString("  case \"$words\" in\n")
	for _, n := range sortedNames() {
		fs := flag.NewFlagSet(n, flag.ContinueOnError)
		if c := commands[n]; c.Flags != nil {
			c.Flags(fs)
		}
		var flags []string
		fs.VisitAll(func(f *flag.Flag) { flags = append(flags, "--"+f.Name) })
		flags = append(flags, "--help")
		fmt.Fprintf(&b, "    \"%s\"*) if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W \"%s\" -- \"$cur\")); else COMPREPLY=($(compgen -f -- \"$cur\")); fi; return;;\n", n, strings.Join(flags, " "))
	}
	for w, subs := range second {
		fmt.Fprintf(&b, "    \"%s\") COMPREPLY=($(compgen -W \"%s\" -- \"$cur\")); return;;\n", w, strings.Join(subs, " "))
	}
	b.WriteString("  esac\n  COMPREPLY=($(compgen -f -- \"$cur\"))\n}\ncomplete -o filenames -F _liveobjects liveobjects\n")
	return b.String()
}
