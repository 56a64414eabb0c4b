package registry_test

import (
	"fmt"
	"log"
	"os"

	"github.com/liveobjects/liveobjects/registry"
)

func ExampleRoot_Binding() {
	dir, err := os.MkdirTemp("", "root-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := registry.Init(dir); err != nil {
		log.Fatal(err)
	}
	r, err := registry.Open(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	b, err := r.Binding("examples/chat.liveobject")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(b.Class.Name, b.ChannelName, b.Driver, b.DriverParams["address"], b.History)
	_, err = r.Binding("examples/whiteboard.liveobject")
	fmt.Println(err)
	fmt.Println(len(r.Problems()), "problems")
	// Output:
	// stream chat relay 127.0.0.1:60000 100
	// examples/whiteboard.liveobject:3: class 3B6D1C0E5A2F4E7D9C8B7A6F5E4D3C2B (of "Whiteboard") is not implemented by liveobjects
	// 0 problems
}
