package registry

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/liveobjects/liveobjects/objects"
)

// Default settings written by Init.
const (
	// DefaultRelayAddress is where the relay server listens and clients
	// connect.
	DefaultRelayAddress = "127.0.0.1:60000"
	// DefaultQSMUplink and DefaultQSMUplinkPort are where the QSM local
	// service accepts in-process clients (the settings uplink_address and
	// uplink_port).
	DefaultQSMUplink     = "127.0.0.1"
	DefaultQSMUplinkPort = "60100"
	// DefaultQSMPort is the UDP port of QSM multicast traffic.
	DefaultQSMPort = "60200"
	// DefaultQSMGMS is the coordinator's membership service address.
	DefaultQSMGMS = "127.0.0.1:60300"
	// DefaultMOAddress is where the micro-object server listens.
	DefaultMOAddress = "127.0.0.1:61000"
)

// Channel IDs of the channels Init writes.
const (
	InitTextChannel        = "00000000000000000000000000000001"
	InitChatChannel        = "00000000000000000000000000000002"
	InitTemperatureChannel = "00000000000000000000000000000003"
	InitQSMTextChannel     = "00000000000000000000000000000004"
)

// Service files Init writes (relative to the root).
const (
	RelayServiceFile          = "services/cc.liveobject"
	QSMLocalServiceFile       = "services/quicksilver_localservice.liveobject"
	QSMCoordinatorServiceFile = "services/quicksilver_coordinator.liveobject"
	MOServiceFile             = "services/mo.liveobject"
)

func ref(id string) *objects.Object { return &objects.Object{Kind: objects.KindReference, ID: id} }

func named(o *objects.Object, name, comment string) *objects.Object {
	o.SetAttr(objects.AttrName, name)
	if comment != "" {
		o.SetAttr(objects.AttrComment, comment)
	}
	return o
}

// fromRegistry is a reference to a registry key, written with an explicit
// From naming the registry.
func fromRegistry(key string) *objects.Value {
	o := ref(key)
	o.From = ref(objects.RegistryID)
	return objects.ObjectValue(o)
}

// onChannel is the "channel" parameter of an object over the relay.
func onRelay(channelID string) *objects.Value {
	c := ref(channelID)
	c.From = ref(objects.KeyRelayClient)
	return objects.ObjectValue(c)
}

// onQSM is the "channel" parameter of an object over QSM: the channel is
// an element of the folder "Qsm" of the in-process QSM client.
func onQSM(channelID string) *objects.Value {
	c := ref(channelID)
	c.From = ref(objects.QSMFolderElement)
	c.From.From = ref(objects.KeyQSMClient)
	return objects.ObjectValue(c)
}

func config(kv ...string) *objects.Value {
	v := &objects.Value{Kind: objects.ValueConfiguration}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Config = append(v.Config, objects.ConfigParam{Name: kv[i], Value: kv[i+1]})
	}
	return v
}

// switchedOff returns a null object whose real definition is kept in an
// XML comment before it, as the original distribution shipped disabled
// services: remove the null object and uncomment the definition to switch
// the service on.
func switchedOff(def *objects.Object) *objects.Object {
	body := strings.TrimRight(string(def.MarshalIndent("Object")), "\n")
	text := "\n  This service is switched off. To switch it on, delete the null Object\n" +
		"  below and uncomment this definition:\n\n  " +
		strings.ReplaceAll(body, "\n", "\n  ") + "\n  "
	return &objects.Object{Kind: objects.KindReference, Nil: true, Head: []*objects.Node{{Comment: text}}}
}

// InitFiles returns the files of a fresh root, by path relative to the
// root: the registry entries, the services (relay on, QSM and the
// micro-object server off), the channels and the examples.
func InitFiles() (map[string][]byte, error) {
	objs := map[string]*objects.Object{}

	// Registry.
	objs["registry/"+objects.KeyRelayServer+"/communication_s.liveobject"] = func() *objects.Object {
		o := named(ref(objects.ClassFolder), "Centralized Comm. Channel Server",
			"The channels the relay server carries: those described in the folder named by root.")
		o.SetParam("root", objects.StringValue(ChannelsDir))
		return o
	}()
	objs["registry/"+objects.KeyRelayClient+"/communication_c.liveobject"] = func() *objects.Object {
		o := named(ref(objects.ClassRelayClient), "Centralized Comm. Channel Client",
			"The folder of channels carried by the relay; one connection per process.")
		o.SetParam("address", objects.StringValue(DefaultRelayAddress))
		o.SetParam("network", objects.StringValue(""))
		return o
	}()
	objs["registry/"+objects.KeyQSMClient+"/quicksilver_c.liveobject"] = func() *objects.Object {
		o := named(ref(objects.ClassQuickSilver), "QuickSilver (in-process client)",
			"Its element \"Qsm\" is the folder of QSM channels.")
		o.SetParam("configuration", config("qsm_application", "true", "uplink_address", DefaultQSMUplink, "uplink_port", DefaultQSMUplinkPort, "uplink_subnet", ""))
		return o
	}()
	objs["registry/"+objects.KeyQSMLocalService+"/quicksilver_s.liveobject"] = func() *objects.Object {
		o := named(ref(objects.ClassQuickSilver), "QuickSilver (local service)", "")
		o.SetParam("configuration", config("qsm", "true", "qsm_application", "false", "qsm_controller", "false",
			"uplink_controller", "true", "uplink_address", DefaultQSMUplink, "uplink_port", DefaultQSMUplinkPort, "uplink_subnet", "",
			"subnet", "", "port", DefaultQSMPort, "gms_address", DefaultQSMGMS))
		return o
	}()
	objs["registry/"+objects.KeyQSMCoordinator+"/quicksilver_g.liveobject"] = func() *objects.Object {
		o := named(ref(objects.ClassQuickSilver), "QuickSilver (coordinator)", "")
		o.SetParam("configuration", config("qsm", "true", "qsm_controller", "true",
			"subnet", "", "port", DefaultQSMPort, "gms_address", DefaultQSMGMS))
		return o
	}()
	objs["registry/"+objects.KeyMOServer+"/mo_s.liveobject"] = func() *objects.Object {
		o := named(ref(objects.ClassMOServer), "Micro-object server", "")
		o.SetParam("address", objects.StringValue(DefaultMOAddress))
		o.SetParam("store", objects.StringValue("mo.db"))
		o.SetParam("cache", objects.IntValue(1024))
		return o
	}()

	// Services.
	objs[RelayServiceFile] = func() *objects.Object {
		o := named(ref(objects.ClassRelayServer), "Relay server", "The default communication: a relay for reliable, totally ordered channels with state transfer.")
		o.SetParam("address", objects.StringValue(DefaultRelayAddress))
		o.SetParam("durable", objects.BoolValue(true))
		o.SetParam("server", fromRegistry(objects.KeyRelayServer))
		return o
	}()
	objs[QSMLocalServiceFile] = func() *objects.Object {
		o := named(ref(objects.ClassQSMLocalService), "QSM local service", "Runs the QSM protocol stack for the clients on this machine.")
		o.SetParam("service", fromRegistry(objects.KeyQSMLocalService))
		return switchedOff(o)
	}()
	objs[QSMCoordinatorServiceFile] = func() *objects.Object {
		o := named(ref(objects.ClassQSMCoordinator), "QSM coordinator", "Hosts the QSM membership service for the network.")
		o.SetParam("service", fromRegistry(objects.KeyQSMCoordinator))
		return switchedOff(o)
	}()
	objs[MOServiceFile] = func() *objects.Object {
		o := named(ref(objects.ClassMOServer), "Micro-object server", "Stores and serves micro objects.")
		o.SetParam("server", fromRegistry(objects.KeyMOServer))
		return switchedOff(o)
	}()

	// Examples.
	objs["examples/chat.liveobject"] = func() *objects.Object {
		o := named(ref(objects.ClassStream), "Chat", "A chat room: one line is one message; joiners see the last 100.")
		o.SetParam(objects.HistoryParam, objects.IntValue(100))
		o.SetParam(ChannelParam, onRelay(InitChatChannel))
		return o
	}()
	objs["examples/shared_text.liveobject"] = func() *objects.Object {
		o := named(ref(objects.ClassText), "Shared Text 1", "A shared text note.")
		o.SetParam(ChannelParam, onRelay(InitTextChannel))
		return o
	}()
	objs["examples/temperature.liveobject"] = func() *objects.Object {
		o := named(ref(objects.ClassVariable), "Temperature", "A replicated value: the last write wins.")
		o.SetParam(ChannelParam, onRelay(InitTemperatureChannel))
		return o
	}()
	objs["examples/shared_text_1.qsm.liveobject"] = func() *objects.Object {
		o := named(ref(objects.ClassText), "Shared Text 1 (QSM)",
			"A shared text note over QSM. QSM gives reliable FIFO delivery only, so joining it explains what is missing.")
		o.SetParam(ChannelParam, onQSM(InitQSMTextChannel))
		return o
	}()
	objs["examples/Team Room/Project Notes/meeting notes.liveobject"] = func() *objects.Object {
		o := named(ref(objects.ClassText), "Meeting notes", "A text note deep in a folder whose names have spaces.")
		o.SetParam(ChannelParam, onRelay(InitTextChannel))
		return o
	}()
	objs["examples/whiteboard.liveobject"] = func() *objects.Object {
		// A composite of classes this project does not implement: it is
		// listed and shown, and joining it names the class.
		o := named(&objects.Object{Kind: objects.KindComposite, ID: "3B6D1C0E5A2F4E7D9C8B7A6F5E4D3C2B"}, "Whiteboard",
			"A desktop whiteboard from the original distribution's examples; its classes are not implemented here.")
		canvas := ref("8A1F0C2D3E4B5A69788796A5B4C3D2E1")
		canvas.SetParam(ChannelParam, onRelay(InitTextChannel))
		ui := ref("C7D6E5F4A3B2918071F6E5D4C3B2A190")
		o.Components = []objects.Component{{ID: "canvas", Object: canvas}, {ID: "window", Object: ui}}
		o.Endpoints = []objects.Endpoint{{ID: "strokes", From: "canvas.strokes"}}
		o.Connections = []objects.Connection{{From: "window.strokes", To: "canvas.strokes"}}
		return o
	}()

	files := map[string][]byte{}
	for p, o := range objs {
		data, err := o.MarshalFile()
		if err != nil {
			return nil, fmt.Errorf("registry: init %s: %w", p, err)
		}
		files[p] = data
	}
	for _, c := range []objects.Metadata{
		{ID: InitTextChannel, Name: "Text_1", Comment: "This is a channel for a shared text note.", MessageClass: objects.ClassText, CheckpointClass: objects.ClassText},
		{ID: InitChatChannel, Name: "chat", Comment: "A chat room.", MessageClass: objects.ClassStream, CheckpointClass: objects.ClassStream},
		{ID: InitTemperatureChannel, Name: "temperature", Comment: "A replicated temperature reading.", MessageClass: objects.ClassVariable, CheckpointClass: objects.ClassVariable},
		{ID: InitQSMTextChannel, Name: "Text_QSM", Comment: "A shared text note carried by QSM.", MessageClass: objects.ClassText, CheckpointClass: objects.ClassText},
	} {
		data, err := c.Marshal()
		if err != nil {
			return nil, fmt.Errorf("registry: init channel %s: %w", c.ID, err)
		}
		files[ChannelsDir+"/"+c.ID+"/"+MetadataFile] = data
	}
	return files, nil
}

// Init writes a fresh root into dir, which must not exist or be empty
// (ErrExists otherwise): the default registry entries, the services (the
// relay server on at DefaultRelayAddress with "durable" true; the QSM local
// service, QSM coordinator and micro-object server switched off as null
// objects, each with its real definition in an XML comment), four
// channels and the examples.
func Init(dir string) error {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("registry: init %s: folder is not empty: %w", dir, ErrExists)
	}
	files, err := InitFiles()
	if err != nil {
		return err
	}
	for p, data := range files {
		if err := writeFileAtomic(filepath.Join(dir, filepath.FromSlash(p)), data); err != nil {
			return fmt.Errorf("registry: init %s: %w", dir, err)
		}
	}
	return nil
}
