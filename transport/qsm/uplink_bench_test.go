package qsm

import (
	"fmt"
	"io"
	"net"
	"testing"
)

// BenchmarkUplinkLink moves 64 KiB writes (the size of a service's
// batched writes to a client under load) over the two kinds of uplink
// link, loopback TCP and the local Unix socket, side by side:
//
//	go test ./transport/qsm -run '^$' -bench UplinkLink
func BenchmarkUplinkLink(b *testing.B) {
	for _, kind := range []string{"tcp", "unix"} {
		b.Run(kind, func(b *testing.B) {
			addr := "127.0.0.1:0"
			if kind == "unix" {
				if addr = localUplinkName(fmt.Sprintf("127.0.0.1:%d", freeUDPPort(b))); addr == "" {
					b.Skip("local uplink sockets are Linux only")
				}
			}
			ln, err := net.Listen(kind, addr)
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			done := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					done <- err
					return
				}
				defer c.Close()
				_, err = io.Copy(io.Discard, c)
				done <- err
			}()
			c, err := net.Dial(kind, ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.Close()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
