package objects_test

import (
	"fmt"
	"strings"

	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/transport"
)

func ExampleParseObject() {
	src := `<Root xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <Object xsi:type="ReferenceObject" id="046B83F2106872300FAEB7B9E4F28B09">
    <Attribute id="9F4C608A9A6D44FFAD8A2FDC662E185B" value="Chat" />
    <Parameter id="history">
      <Value xsi:type="xsd:int">100</Value>
    </Parameter>
    <Parameter>
      <Value xsi:type="xsd:string">oops</Value>
    </Parameter>
  </Object>
</Root>`
	o, err := objects.ParseObject("examples/chat.liveobject", strings.NewReader(src))
	fmt.Println(err)
	c, t, _ := objects.TypeOf(o)
	fmt.Println(o.Name(), c.Name, t)
	// Output:
	// examples/chat.liveobject:7: Parameter has no id
	// Chat stream stream (interface lines; requires total-order+state-transfer; security none)
}

func ExampleType_CheckDriver() {
	c, _ := objects.LookupClass(objects.ClassStream)
	t := objects.Type{Category: c.Category, Requires: c.Requires}
	fmt.Println(t.CheckDriver("chat", "news", "qsm", transport.Reliable|transport.FIFO))
	// Output:
	// chat: needs total-order; channel "news" over qsm provides fifo
}
