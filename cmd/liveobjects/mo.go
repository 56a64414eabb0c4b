package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/liveobjects/liveobjects/objects/micro"
)

// moClientFlags are the flags every mo client command shares.
type moClientFlags struct {
	data    string
	keys    string
	timeout time.Duration
}

func (o *moClientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.data, "data", "", "data directory of the running micro-object server (its local socket is DATA/mo.sock); default $LIVEOBJECTS_MO_DATA, else the first that answers of "+defaultMODataDir()+" ('mo serve') and ROOT/.state/mo of the default root ('up' with its mo service on)")
	fs.StringVar(&o.keys, "keys", defaultMOKeyFile(), "key file of the application (created with fresh keys if missing)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "give up after this long")
}

func defaultMODataDir() string { return micro.DefaultDataDir() }

func defaultMOKeyFile() string { return micro.DefaultKeyFile() }

// check refuses flag values the client commands cannot use.
func (o *moClientFlags) check() error {
	if o.timeout <= 0 {
		return usagef("--timeout must be positive (e.g. 30s)")
	}
	return nil
}

// lib connects to the local server and loads the keys.
func (o *moClientFlags) lib(ctx context.Context) (*micro.Lib, func(), error) {
	if err := o.check(); err != nil {
		return nil, nil, err
	}
	lc, err := o.dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	keys, err := micro.LoadOrCreateKeys(o.keys)
	if err != nil {
		lc.Close()
		return nil, nil, err
	}
	lib := micro.NewLib(lc, keys)
	return lib, func() { lib.Close(); lc.Close() }, nil
}

// dial connects to the local server: that of --data when given, else that
// of $LIVEOBJECTS_MO_DATA, else the first that answers of the one 'mo
// serve' runs by default and the one 'up' runs for the default root, so
// that the commands find the server of a plain 'up' without flags.
func (o *moClientFlags) dial(ctx context.Context) (*micro.LocalClient, error) {
	if o.data != "" {
		return micro.DialLocal(ctx, filepath.Join(o.data, "mo.sock"))
	}
	dirs := []string{defaultMODataDir()} // $LIVEOBJECTS_MO_DATA when set
	if os.Getenv("LIVEOBJECTS_MO_DATA") == "" {
		dirs = append(dirs, stateDir(defaultRoot(), "mo"))
	}
	var errs []string
	for _, d := range dirs {
		sock := filepath.Join(d, "mo.sock")
		lc, err := micro.DialLocal(ctx, sock)
		if err == nil {
			return lc, nil
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", sock, op.Err))
		} else {
			errs = append(errs, err.Error())
		}
	}
	return nil, fmt.Errorf("no micro-object server answers here (%s): start one with 'liveobjects mo serve', or switch on the mo service of the root 'up' runs ('liveobjects service on mo'), or give --data DIR",
		strings.Join(errs, "; "))
}

func parseTokenArg(s string) (micro.Token, error) {
	t, err := micro.ParseToken(strings.TrimSpace(s))
	if err != nil {
		return t, usagef("%q is not a token (79 characters as printed by 'mo put'): %v", s, err)
	}
	return t, nil
}

var moServeOpts struct {
	listen, advertise, data string
	cacheMiB                int64
	grace, floodEvery       time.Duration
}

var (
	moPutOpts struct {
		moClientFlags
		expire time.Duration
		sealed bool
	}
	moGetOpts    moClientFlags
	moAddOpts    moClientFlags
	moPolicyOpts moClientFlags
	moLsOpts     struct {
		moClientFlags
		long, noSync bool
	}
)

func init() {
	register(&command{
		Name:    "mo serve",
		Summary: "run a micro-object (MO) server: store, cache, peers, policies",
		Help: `Runs an MO server. Its store (objects it is home for) and cache (objects it
fetched, least recently used out first) live in one bbolt file, DATA/mo.db,
and survive restarts. Peers reach it over TCP at --listen (FETCH, ASSENT,
BUSY); applications on this host reach it over the unix socket DATA/mo.sock
(mode 0600: only this user). The other mo commands use that socket.

The address peers reach is written into the token of every object this
server is home for: keep --listen (or --advertise) stable across restarts.
On start the server prints "listening ADDR" on stdout and writes ADDR to
DATA/mo.addr. It runs until interrupted.

Example:
  liveobjects mo serve --listen 127.0.0.1:4750`,
		Flags: func(fs *flag.FlagSet) {
			o := &moServeOpts
			fs.StringVar(&o.listen, "listen", "127.0.0.1:4750", "TCP address for peers (port 0: any free port)")
			fs.StringVar(&o.advertise, "advertise", "", "address written into tokens and sent to peers (default: the listening address)")
			fs.StringVar(&o.data, "data", defaultMODataDir(), "data directory (mo.db, mo.sock, mo.addr)")
			fs.Int64Var(&o.cacheMiB, "cache", 64, "cache size bound in MiB")
			fs.DurationVar(&o.grace, "grace", time.Minute, "how long objects outlive their copy-expire date")
			fs.DurationVar(&o.floodEvery, "flood-interval", 30*time.Second, "how often every flooding policy runs again, to repair what an unreachable peer missed (negative: never)")
		},
		Run: runMOServe,
	})
	register(&command{
		Name:    "mo put",
		Args:    "FILE",
		Summary: "create a micro object from FILE (- for stdin) and print its token",
		Help: `Seals FILE with the keys of --keys, asks the local MO server to adopt it
(become its home) and prints the new token. The server keeps the object
until its copy-expire date (--expire from now) plus its grace period.

Keys: the key file (default CONFIG/liveobjects/mo.keys, or
$LIVEOBJECTS_MO_KEYS) holds the group's payload key and writer key; it is
created on first use (mode 0600). Give a copy to the people who should
read your objects and add to their clusters; servers never see it.`,
		Flags: func(fs *flag.FlagSet) {
			moPutOpts.register(fs)
			fs.DurationVar(&moPutOpts.expire, "expire", 30*24*time.Hour, "copy-expire date, from now")
			fs.BoolVar(&moPutOpts.sealed, "sealed-cluster", false, "seal the cluster's members too (servers cannot read it; flooding above level 0 cannot follow it)")
		},
		Run: runMOPut,
	})
	register(&command{
		Name:    "mo get",
		Args:    "TOKEN",
		Summary: "write the payload of a micro object to stdout",
		Help: `Asks the local MO server for the object (from its store or cache, or
fetched from the home server named in the token, then from servers on
ditto-lists), checks it against the token and opens it with --keys.`,
		Flags: moGetOpts.register,
		Run:   runMOGet,
	})
	register(&command{
		Name:    "mo add",
		Args:    "TOKEN CHILD...",
		Summary: "add tokens to the cluster of a micro object",
		Help: `Signs each CHILD as a member of TOKEN's cluster with the writer key of
--keys and sends the UPDATE to the local server, which runs the object's
replication policies (flooding forwards the additions to its peers).`,
		Flags: moAddOpts.register,
		Run:   runMOAdd,
	})
	register(&command{
		Name:    "mo ls",
		Args:    "[TOKEN]",
		Summary: "list the cluster of a micro object, or the objects this server shares",
		Help: `With TOKEN: harmonizes the cluster with the object's home and known peers
(unless --no-sync), then prints its members in copy-expire order, one token
a line (-l adds the expire date and home server).

Without TOKEN: lists the local copies with replication policies: token,
policies and the peers the server knows for each.`,
		Flags: func(fs *flag.FlagSet) {
			moLsOpts.register(fs)
			fs.BoolVar(&moLsOpts.long, "l", false, "also print each member's copy-expire date and home server")
			fs.BoolVar(&moLsOpts.noSync, "no-sync", false, "list the local copy without asking the home server")
		},
		Run: runMOLs,
	})
	register(&command{
		Name:    "mo policy",
		Args:    "TOKEN POLICY",
		Summary: "start or stop a replication policy (flooding:LEVEL, sustain:DURATION, ...:off)",
		Help: `POLICY is one of
  flooding[:LEVEL]   forward cluster additions to the servers sharing the object;
                     LEVEL > 0 follows referenced objects (1: members, 2: their
                     clusters, 3: their members, ...)
  flooding:off       stop flooding
  sustain:DURATION   keep the local copy that long past its expiry (e.g. 720h);
                     repeat before it runs out
  sustain:off        stop sustaining
A server accepts flooded items only for objects it floods itself.`,
		Flags: moPolicyOpts.register,
		Run:   runMOPolicy,
	})
}

func runMOServe(ctx context.Context, args []string) error {
	if len(args) != 0 {
		return usagef("mo serve takes no arguments")
	}
	o := moServeOpts
	if o.cacheMiB <= 0 {
		return usagef("--cache must be positive (MiB)")
	}
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		return usagef("--listen %q: want host:port (port 0: any free port)", o.listen)
	}
	if o.grace <= 0 {
		return usagef("--grace must be positive (e.g. 1m)")
	}
	if o.floodEvery == 0 {
		return usagef("--flood-interval must not be 0 (negative: flooding policies run only when their cluster grows)")
	}
	srv, err := micro.NewServer(micro.ServerConfig{
		Listen: o.listen, Advertise: o.advertise, DataDir: o.data, CacheBytes: o.cacheMiB << 20,
		Grace: o.grace, FloodInterval: o.floodEvery, Logger: slog.Default(),
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	if err := srv.Start(ctx); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%w (is another 'mo serve' running? give another address with --listen, port 0 for any free one)", err)
		}
		return err
	}
	addr := srv.Addr().String()
	if err := os.WriteFile(filepath.Join(o.data, "mo.addr"), []byte(addr+"\n"), 0o600); err != nil {
		return fmt.Errorf("mo serve: %w", err)
	}
	fmt.Printf("listening %s\n", addr)
	fmt.Fprintf(os.Stderr, "mo server at %s; local socket %s\n", addr, srv.LocalSocket())
	<-ctx.Done()
	return srv.Close()
}

func runMOPut(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usagef("want one FILE (- for stdin)")
	}
	if moPutOpts.expire <= 0 {
		return usagef("--expire must be positive")
	}
	if err := moPutOpts.check(); err != nil {
		return err
	}
	data, err := readPayload(args[0])
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, moPutOpts.timeout)
	defer cancel()
	lib, done, err := moPutOpts.lib(ctx)
	if err != nil {
		return err
	}
	defer done()
	m, err := lib.CreateNewWith(ctx, time.Now().Add(moPutOpts.expire), data, micro.CreateOptions{SealedCluster: moPutOpts.sealed})
	if err != nil {
		return err
	}
	fmt.Println(m.Token())
	return nil
}

// readPayload reads the content of a new object from the file name, or
// stdin for "-", refusing (before reading it all) more than an object
// holds.
func readPayload(name string) ([]byte, error) {
	in, what := os.Stdin, "stdin"
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.IsDir() {
			return nil, fmt.Errorf("%s is a folder; give a file (or - for stdin)", name)
		}
		in, what = f, name
	}
	data, err := io.ReadAll(io.LimitReader(in, micro.MaxPlain+1))
	if err != nil {
		return nil, err
	}
	if len(data) > micro.MaxPlain {
		return nil, fmt.Errorf("%s holds more than %d bytes, the most a micro object holds (%w); a mount's files/ folder stores larger files in blocks", what, micro.MaxPlain, micro.ErrTooLarge)
	}
	return data, nil
}

func runMOGet(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usagef("want one TOKEN")
	}
	t, err := parseTokenArg(args[0])
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, moGetOpts.timeout)
	defer cancel()
	lib, done, err := moGetOpts.lib(ctx)
	if err != nil {
		return err
	}
	defer done()
	m, err := lib.Get(ctx, t)
	if err != nil {
		return moFetchError(err, t)
	}
	_, err = os.Stdout.Write(m.Payload())
	return err
}

func runMOAdd(ctx context.Context, args []string) error {
	if len(args) < 2 {
		return usagef("want TOKEN and at least one CHILD")
	}
	t, err := parseTokenArg(args[0])
	if err != nil {
		return err
	}
	var kids []micro.Token
	for _, a := range args[1:] {
		k, err := parseTokenArg(a)
		if err != nil {
			return err
		}
		kids = append(kids, k)
	}
	ctx, cancel := context.WithTimeout(ctx, moAddOpts.timeout)
	defer cancel()
	lib, done, err := moAddOpts.lib(ctx)
	if err != nil {
		return err
	}
	defer done()
	m, err := lib.Get(ctx, t)
	if err != nil {
		return moFetchError(err, t)
	}
	n, err := m.AddMany(ctx, kids)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "added %d new member(s) of %d\n", n, len(kids))
	return nil
}

func runMOLs(ctx context.Context, args []string) error {
	if len(args) > 1 {
		return usagef("want at most one TOKEN")
	}
	ctx, cancel := context.WithTimeout(ctx, moLsOpts.timeout)
	defer cancel()
	lib, done, err := moLsOpts.lib(ctx)
	if err != nil {
		return err
	}
	defer done()
	if len(args) == 0 {
		sh, err := lib.Local().Shared(ctx)
		if err != nil {
			return err
		}
		for _, s := range sh {
			var pol []string
			if s.Flood >= 0 {
				pol = append(pol, fmt.Sprintf("flooding:%d", s.Flood))
			}
			if !s.SustainUntil.IsZero() {
				pol = append(pol, "sustained-until:"+s.SustainUntil.UTC().Format(time.RFC3339))
			}
			fmt.Printf("%s\t%s\tpeers=%s\n", s.Token, strings.Join(pol, ","), strings.Join(s.Peers, ","))
		}
		return nil
	}
	t, err := parseTokenArg(args[0])
	if err != nil {
		return err
	}
	// Warnings are printed once there is a listing to qualify; when there
	// is none, the error says why.
	var syncErr error
	var warnings []string
	if !moLsOpts.noSync {
		if syncErr = lib.Local().Sync(ctx, t); syncErr != nil {
			warnings = append(warnings, fmt.Sprintf("warning: could not harmonize with the home server, listing the local copy: %v", syncErr))
		}
	}
	var ts []micro.Token
	m, gerr := lib.Get(ctx, t)
	if gerr == nil {
		ts, err = m.Cluster(ctx) // opens a sealed cluster
	} else {
		warnings = append(warnings, fmt.Sprintf("warning: %v; listing member ids as the server holds them", gerr))
		ts, err = lib.ClusterOf(ctx, t)
	}
	if err == nil {
		for _, w := range warnings {
			fmt.Fprintln(os.Stderr, w)
		}
	}
	if err != nil {
		if errors.Is(err, micro.ErrNotFound) {
			cause := syncErr
			if cause == nil {
				cause = gerr
			}
			return moNoCopyError(err, t, cause)
		}
		return err
	}
	for _, c := range ts {
		if moLsOpts.long {
			fmt.Printf("%s\t%s\t%s\n", c, c.Expire().UTC().Format(time.RFC3339), c.Home())
		} else {
			fmt.Println(c)
		}
	}
	return nil
}

func runMOPolicy(ctx context.Context, args []string) error {
	if len(args) != 2 {
		return usagef("want TOKEN and POLICY (e.g. flooding:2)")
	}
	t, err := parseTokenArg(args[0])
	if err != nil {
		return err
	}
	p, err := micro.ParsePolicy(args[1])
	if err != nil {
		return usagef("%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, moPolicyOpts.timeout)
	defer cancel()
	lib, done, err := moPolicyOpts.lib(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := lib.Local().Replicate(ctx, t, p); err != nil {
		return moFetchError(err, t)
	}
	return nil
}

// moNoCopyError explains err, the local server having no copy of t's
// cluster, with cause, why it could not get one from t's home server; an
// empty list would look like an empty cluster.
func moNoCopyError(err error, t micro.Token, cause error) error {
	switch {
	case cause == nil:
		return fmt.Errorf("cannot list the cluster of %s: no local copy exists: %w", t, err)
	case errors.Is(cause, micro.ErrNotFound):
		return fmt.Errorf("cannot list the cluster of %s: neither its home server %s nor the servers it named has it (it may have expired), and no local copy exists: %w", t, t.Home(), cause)
	}
	return fmt.Errorf("cannot list the cluster of %s: its home server %s could not be reached (is that server running and reachable from here?) and no local copy exists: %w", t, t.Home(), cause)
}

// moFetchError adds to an error getting the object of t what to look at.
func moFetchError(err error, t micro.Token) error {
	switch {
	case errors.Is(err, micro.ErrBadKeys):
		return fmt.Errorf("%w (is --keys the key file of the object's group?)", err)
	case errors.Is(err, micro.ErrNotFound):
		return fmt.Errorf("%w (neither its home server %s nor the servers it named has it; it may have expired)", err, t.Home())
	case errors.Is(err, micro.ErrInternal), errors.Is(err, micro.ErrBusy):
		return fmt.Errorf("%w (the local server could not get it from its home server %s: is that server running and reachable from here?)", err, t.Home())
	}
	return err
}
