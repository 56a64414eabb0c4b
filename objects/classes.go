package objects

import (
	"sort"
	"strings"

	"github.com/liveobjects/liveobjects/transport"
)

// Category is the kind of behaviour an object has; it tells which object
// logic runs it.
type Category string

// Categories. The list is open: classes of other categories may be added.
const (
	CategoryStream   Category = "stream"
	CategoryVariable Category = "variable"
	CategoryText     Category = "text"
	CategoryFolder   Category = "folder"
	CategoryService  Category = "service"
	CategoryChannel  Category = "channel"
	CategoryUnknown  Category = "unknown"
)

// Class ids of the classes this project implements.
const (
	// ClassText is the shared text note (the original's id).
	ClassText = "982130E40A294E3CAD5441841E87941E"
	// ClassStream is a chat-like event stream with an optional bounded
	// history (xsd:int Parameter "history").
	ClassStream = "046B83F2106872300FAEB7B9E4F28B09"
	// ClassVariable is a replicated value; the last write in the total
	// order wins.
	ClassVariable = "7BCE0EEB25F0645CBF2946CB20D804FD"
	// ClassFolder is a folder of objects.
	ClassFolder = "1D9331A1C7A1B24BF94DAB36BF7A89C8"
	// ClassRelayServer is the relay server service.
	ClassRelayServer = "74E9FFD5A7FD819DF979BC04CA78B555"
	// ClassQSMLocalService is the QSM local system service.
	ClassQSMLocalService = "99DFC3037016009C2BBFB7E0559DFD02"
	// ClassQSMCoordinator is the QSM coordinator (membership service).
	ClassQSMCoordinator = "D15AECFFFAC480950E40886E5C57B05C"
	// ClassMOServer is the micro-object server service.
	ClassMOServer = "3BB687ABCD053F61122490135D404B4B"
	// ClassRelayClient is the relay client: the folder of channels
	// carried by a relay (the object at registry key KeyRelayClient).
	ClassRelayClient = "929BE72D2C277906C7249282A1CCD2EC"
	// ClassQuickSilver is a QuickSilver instance (the objects at the QSM
	// registry keys); its element "Qsm" is the folder of QSM channels.
	ClassQuickSilver = "51E2B9F7FE54F7C23D24EAA5BAF00B6A"
)

// HistoryParam is the xsd:int Parameter of a stream that bounds the
// history a joiner receives (0 or absent: no history).
const HistoryParam = "history"

// Class is one class this project implements.
type Class struct {
	ID, Name string
	Category Category
	// Requires are the guarantees a channel must provide to carry objects
	// of this class (for a stream without history; see TypeOf).
	Requires transport.Guarantee
}

var classes = map[string]Class{
	ClassText:            {ClassText, "shared text note", CategoryText, transport.TotalOrder | transport.StateTransfer},
	ClassStream:          {ClassStream, "stream", CategoryStream, transport.TotalOrder},
	ClassVariable:        {ClassVariable, "variable", CategoryVariable, transport.TotalOrder | transport.StateTransfer},
	ClassFolder:          {ClassFolder, "folder", CategoryFolder, 0},
	ClassRelayServer:     {ClassRelayServer, "relay server", CategoryService, 0},
	ClassQSMLocalService: {ClassQSMLocalService, "QSM local service", CategoryService, 0},
	ClassQSMCoordinator:  {ClassQSMCoordinator, "QSM coordinator", CategoryService, 0},
	ClassMOServer:        {ClassMOServer, "micro-object server", CategoryService, 0},
	ClassRelayClient:     {ClassRelayClient, "relay client folder", CategoryChannel, 0},
	ClassQuickSilver:     {ClassQuickSilver, "QuickSilver", CategoryChannel, 0},
}

// LookupClass returns the implemented class with the given id. Versioned
// ids ("ns`1:ID`2") and lower-case hex are accepted.
func LookupClass(id string) (Class, bool) {
	c, ok := classes[BaseID(id)]
	return c, ok
}

// Classes returns every implemented class, sorted by name.
func Classes() []Class {
	out := make([]Class, 0, len(classes))
	for _, c := range classes {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// UnknownClass returns the Class value used for an id this project does
// not implement: category unknown, the id as name.
func UnknownClass(id string) Class {
	return Class{ID: id, Name: "unknown class " + id, Category: CategoryUnknown}
}

// ClassOf returns the class of a definition: for a null object or an
// object with a From (a repository object) ok is false; otherwise the
// class named by the object's id, known or not.
func ClassOf(o *Object) (c Class, known bool) {
	if o == nil || o.Nil {
		return Class{Category: CategoryUnknown}, false
	}
	if c, ok := LookupClass(o.ID); ok {
		return c, true
	}
	return UnknownClass(strings.TrimSpace(o.ID)), false
}
