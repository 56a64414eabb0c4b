package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/fs"
	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/objects/micro"
	"github.com/liveobjects/liveobjects/registry"
	"github.com/liveobjects/liveobjects/services"
)

// defaultRoot is where "up" keeps its root folder when none is given:
// $LIVEOBJECTS_ROOT, else $XDG_DATA_HOME/liveobjects/root, else
// ~/.local/share/liveobjects/root.
func defaultRoot() string {
	if r := os.Getenv("LIVEOBJECTS_ROOT"); r != "" {
		return r
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "liveobjects", "root")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "liveobjects", "root")
	}
	return "liveobjects-root"
}

// rootArg is the root folder named by the arguments of a command that
// takes [ROOT]: the one argument, or the default root without one.
func rootArg(args []string) (string, error) {
	switch len(args) {
	case 0:
		return defaultRoot(), nil
	case 1:
		return args[0], nil
	}
	return "", usagef("want at most one argument, the root folder (default %s)", defaultRoot())
}

type mountFlags struct {
	relay         string
	mo            string
	debug         bool
	listen        string
	root          string
	allowNonEmpty bool
}

func init() {
	var up mountFlags
	register(&command{
		Name:    "up",
		Args:    "[MOUNTPOINT]",
		Summary: "run the default setup: a root with examples, its services (the relay on loopback) and a mount (default ./live)",
		Help: `Creates a root folder with examples if there is none (--root, default
$LIVEOBJECTS_ROOT or ~/.local/share/liveobjects/root), starts the services it
declares in services/ (by default the relay on 127.0.0.1:60000), mounts it at
MOUNTPOINT (default ./live) and serves until Ctrl-C or SIGTERM, then unmounts.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&up.root, "root", defaultRoot(), "root folder (created with examples if missing)")
			fs.StringVar(&up.listen, "listen", "", "relay listen address, overriding the root's services/ definition (e.g. 127.0.0.1:0)")
			fs.BoolVar(&up.debug, "debug", false, "log every FUSE request")
			fs.BoolVar(&up.allowNonEmpty, "allow-non-empty", false, "mount on a folder that holds files (hidden while mounted)")
		},
		Run: func(ctx context.Context, args []string) error {
			mnt := "live"
			switch len(args) {
			case 0:
			case 1:
				mnt = args[0]
			default:
				return usagef("want at most one mountpoint")
			}
			return runUp(ctx, up, mnt)
		},
	})
	var mf mountFlags
	register(&command{
		Name:    "mount",
		Args:    "ROOT MOUNTPOINT",
		Summary: "mount a root folder against a running relay (no services hosted)",
		Help: `Mounts ROOT at MOUNTPOINT and serves until Ctrl-C, SIGTERM or umount.
Live objects join over the relay named by --relay, or the address in the root's
registry (the relay client entry). Start the relay with 'liveobjects relay' or
'liveobjects up' elsewhere.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&mf.relay, "relay", "", "relay address host:port (default: from the root's registry)")
			fs.StringVar(&mf.mo, "mo", "", "local socket of a micro-object server ('liveobjects mo serve'): show its shared files in files/")
			fs.BoolVar(&mf.debug, "debug", false, "log every FUSE request")
			fs.BoolVar(&mf.allowNonEmpty, "allow-non-empty", false, "mount on a folder that holds files (hidden while mounted)")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 2 {
				return usagef("want ROOT and MOUNTPOINT")
			}
			reg, err := openRoot(ctx, args[0])
			if err != nil {
				return err
			}
			defer reg.Close()
			return runMount(ctx, mf, args[1], reg, nil)
		},
	})
	var lazy bool
	register(&command{
		Name:    "umount",
		Args:    "MOUNTPOINT",
		Summary: "unmount a mount (also one left stale by a daemon that died)",
		Flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&lazy, "lazy", false, "detach even while files are open")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want one MOUNTPOINT")
			}
			ok, err := fs.RecoverStale(args[0])
			switch {
			case errors.Is(err, fs.ErrNotAnswering):
				// It cannot be unmounted cleanly: the question asked is
				// still open in it.
				fmt.Fprintf(os.Stderr, "%s: %v; detaching it lazily\n", args[0], fs.ErrNotAnswering)
				lazy = true
			case err != nil:
				return err
			case ok:
				fmt.Fprintf(os.Stderr, "%s was stale (its daemon died); detached\n", args[0])
				return nil
			}
			if err := fs.Unmount(args[0], lazy); err != nil {
				if errors.Is(err, fs.ErrNotMounted) || errors.Is(err, fs.ErrOtherMount) {
					return err
				}
				return fmt.Errorf("%s: %w (files still open? try --lazy)", args[0], err)
			}
			return nil
		},
	})
}

// checkMountpoint refuses, before any service starts, a mountpoint inside
// the root (the root is watched, and a mount inside it would be read by
// its own daemon, joining every object), a file and, unless allowNonEmpty,
// a folder that holds files (fs.CheckMountpoint).
func checkMountpoint(root, mnt string, allowNonEmpty bool) error {
	absRoot, err1 := filepath.Abs(root)
	absMnt, err2 := filepath.Abs(mnt)
	if err1 != nil || err2 != nil {
		return nil
	}
	if rel, err := filepath.Rel(absRoot, absMnt); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return fmt.Errorf("the mountpoint %s is inside the root folder %s; choose a mountpoint outside it", absMnt, absRoot)
	}
	return fs.CheckMountpoint(absMnt, allowNonEmpty)
}

// failedService returns the status of a service of class classID that
// host failed to start, if there is one.
func failedService(host *services.Host, classID string) (services.Status, bool) {
	if host != nil {
		for _, s := range host.All() {
			if s.State == services.Failed && s.ClassID == classID {
				return s, true
			}
		}
	}
	return services.Status{}, false
}

// runUp hosts the root's services and mounts it.
func runUp(ctx context.Context, f mountFlags, mnt string) error {
	if err := checkMountpoint(f.root, mnt, f.allowNonEmpty); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(f.root, "services")); errors.Is(err, os.ErrNotExist) {
		if err := registry.Init(f.root); err != nil {
			return fmt.Errorf("create root %s: %w", f.root, err)
		}
		slog.Info("created a root folder with examples", "root", f.root)
	}
	reg, err := openRoot(ctx, f.root)
	if err != nil {
		return err
	}
	defer reg.Close()
	host := services.NewHost(reg, serviceFactories(reg, f.listen), slog.Default())
	defer host.Close()
	if err := host.Start(ctx); err != nil {
		if _, relayFailed := failedService(host, objects.ClassRelayServer); relayFailed {
			// The mount's channels need the relay: without it, up has
			// nothing to serve.
			hint := ""
			if errors.Is(err, syscall.EADDRINUSE) {
				hint = " (is another liveobjects running? stop it; or, for the relay, run 'liveobjects up --listen 127.0.0.1:0', which takes a free port)"
			}
			return fmt.Errorf("start services: %w%s", err, hint)
		}
		// Another service (QSM, micro objects) failed: the rest goes on,
		// and its file in services/ says why.
		slog.Warn("a service did not start; up goes on without it: its file in services/ says why, and it is tried again every few seconds", "err", err)
	}
	host.Follow()
	relayAddr := ""
	for _, s := range host.All() {
		if s.State == services.Running && s.ClassID == objects.ClassRelayServer {
			relayAddr = s.Addr
		}
	}
	if relayAddr == "" {
		slog.Warn("no relay service is running in this root; live objects will use the relay address in the registry")
	}
	f.relay = relayAddr
	return runMount(ctx, f, mnt, reg, host)
}

func openRoot(ctx context.Context, dir string) (*registry.Root, error) {
	if err := checkRootFolder(dir); err != nil {
		return nil, err
	}
	reg, err := registry.Open(dir)
	if err != nil {
		return nil, err
	}
	for _, p := range reg.Problems() {
		slog.Warn("root: " + p.String())
	}
	if err := reg.Watch(ctx); err != nil {
		reg.Close()
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	return reg, nil
}

// runMount mounts and serves until ctx ends or the mount is unmounted.
func runMount(ctx context.Context, f mountFlags, mnt string, reg *registry.Root, host *services.Host) error {
	if err := checkMountpoint(reg.Dir(), mnt, f.allowNonEmpty); err != nil {
		return err
	}
	params := relayClientParams(reg)
	if f.relay != "" {
		params["address"] = f.relay
	}
	hub := channels.NewHub(driverDialer(host), channels.Options{})
	defer hub.Close()
	cfg := fs.Config{
		Root:          reg,
		Hub:           hub,
		ChannelDriver: "relay",
		ChannelParams: params,
		Debug:         f.debug,
		AllowNonEmpty: f.allowNonEmpty,
		OnCreateChannel: func(ctx context.Context, md objects.Metadata) error {
			return createRemoteChannel(ctx, hub, params, md)
		},
		OnRemoveChannel: func(ctx context.Context, md objects.Metadata) error {
			return removeRemoteChannel(ctx, hub, params, md)
		},
	}
	if host != nil {
		cfg.ServiceStatus = host.StatusText
	}
	if e, ok := reg.Key(objects.KeyQSMClient); ok && e.Def != nil {
		// The root's channels over QSM, in a folder of their own, with the
		// client settings the registry has when each is joined.
		last := services.Settings(reg, e.Def)
		cfg.Folders = append(cfg.Folders, fs.ChannelFolder{Name: "qsm", Driver: "qsm", Settings: func() map[string]string {
			if e, ok := reg.Key(objects.KeyQSMClient); ok && e.Def != nil {
				return services.Settings(reg, e.Def)
			}
			return last // the key was removed: keep what it said
		}})
	}
	switch {
	case host != nil:
		// The root's own micro-object server, while it runs.
		hf := newHostedFiles(ctx, host, filepath.Join(stateDir(reg.Dir(), "mo"), "mo.sock"))
		defer hf.Close()
		cfg.Files = hf
	case f.mo != "":
		folder, closeFolder, err := openFolder(ctx, f.mo)
		if err != nil {
			return err
		}
		defer closeFolder()
		cfg.Files = folder
	}
	m, err := fs.New(mnt, cfg)
	if err != nil {
		return err
	}
	mctx, stopMirror := context.WithCancel(ctx)
	mirrored := make(chan struct{})
	go func() { defer close(mirrored); mirrorChannels(mctx, hub, params, reg) }()
	defer func() { stopMirror(); <-mirrored }()
	fmt.Fprintf(os.Stderr, "live objects from %s mounted at %s (relay %s). Try:\n", reg.Dir(), mnt, params["address"])
	fmt.Fprintf(os.Stderr, "  ls %s/examples %s/channels\n", mnt, mnt)
	fmt.Fprintf(os.Stderr, "  cat %s/channels/chat.liveobject &    # joins: state, then every event\n", mnt)
	fmt.Fprintf(os.Stderr, "  echo hello >> %s/channels/chat.liveobject    # publishes one event; Ctrl-C here unmounts\n", mnt)
	if _, err := os.Stat(filepath.Join(dataHome(), "mime", "packages", "liveobjects.xml")); err != nil {
		fmt.Fprintf(os.Stderr, "  liveobjects desktop install    # once: lets file managers know .liveobject files without reading them\n")
	}
	waited := make(chan struct{})
	go func() { m.Wait(); close(waited) }()
	select {
	case <-ctx.Done():
		slog.Info("unmounting", "mountpoint", m.Dir())
	case <-waited:
		slog.Info("unmounted from outside", "mountpoint", m.Dir())
	}
	return m.Close()
}

// relayClientParams reads the relay client's settings from the root's
// registry (the entry at objects.KeyRelayClient).
func relayClientParams(reg *registry.Root) map[string]string {
	params := map[string]string{}
	if e, ok := reg.Key(objects.KeyRelayClient); ok && e.Def != nil {
		for k, v := range services.Settings(reg, e.Def) {
			params[k] = v
		}
	}
	params["address"] = normalizeAddr(params["address"], params["mainport"])
	return params
}

// normalizeAddr makes host:port from the forms definitions use.
func normalizeAddr(addr, port string) string {
	if addr == "" {
		addr = "127.0.0.1"
	}
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	if port == "" {
		port = "60000"
	}
	return net.JoinHostPort(addr, port)
}

// openFolder connects to a micro-object server's local socket and shows
// its shared files, flooded at level 3 (contents too).
func openFolder(ctx context.Context, socket string) (*micro.Folder, func(), error) {
	keys, err := micro.LoadOrCreateKeys(micro.DefaultKeyFile())
	if err != nil {
		return nil, nil, err
	}
	local, err := micro.DialLocal(ctx, socket)
	if err != nil {
		return nil, nil, fmt.Errorf("micro-object server at %s: %w", socket, err)
	}
	lib := micro.NewLib(local, keys)
	folder := micro.NewFolder(lib, 3, slog.Default())
	return folder, func() {
		folder.Close()
		lib.Close()
		local.Close()
	}, nil
}
