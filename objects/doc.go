// Package objects is the live object model: definitions as the original
// platform wrote them (.liveobject files and channel metadata.xml), the
// classes this project implements, and distributed types.
//
// # Files
//
// A .liveobject file is XML: a <Root> holding one <Object>. ParseObject
// reads it into an *Object, keeping line numbers, and MarshalFile writes
// it back; parse -> write -> parse gives the same model. Elements,
// attributes and comments the model does not know are kept (Extra,
// ExtraAttrs, Head, Tail) and written back after the known ones, so
// nothing is silently dropped; comments inside an element keep their
// content but move after the element's known children. Problems are
// *ParseError values printing "file:line: msg". Files may be UTF-8 or
// UTF-16 with a byte order mark, as the original wrote them.
//
// # Ids
//
// Object, class and key ids are 32 hex digits, optionally versioned:
// namespace`nsver:id`ver (ParseVersionedID, BaseID). Known ids are
// constants: AttrName (display name, 9F4C608A9A6D44FFAD8A2FDC662E185B),
// AttrComment (comment, 07EC27D89CBD410DADE60463E4D46985), the registry
// keys Key* and the class ids Class*.
//
// # How an object binds to its channel
//
// An example object is a ReferenceObject whose id is its class id. Its
// Parameter "channel" holds a ReferenceObject whose id is the channel ID
// (channels/<ID>/) and whose <From> names the dictionary the channel is
// taken from. A From with no From of its own is looked up in the registry
// (registry/<KEY>/*.liveobject); a From naming RegistryID is the registry
// itself. The relay client folder is at KeyRelayClient:
//
//	<Root xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
//	  <Object xsi:type="ReferenceObject" id="046B83F2106872300FAEB7B9E4F28B09">
//	    <Attribute id="9F4C608A9A6D44FFAD8A2FDC662E185B" value="Chat" />
//	    <Parameter id="history">
//	      <Value xsi:type="xsd:int">100</Value>
//	    </Parameter>
//	    <Parameter id="channel">
//	      <Value xsi:type="ReferenceObject" id="00000000000000000000000000000002">
//	        <From xsi:type="ReferenceObject" id="011E83FA6A9F426993BB8EF26FF7D7B8" />
//	      </Value>
//	    </Parameter>
//	  </Object>
//	</Root>
//
// Over QSM the channel is an element of the folder "Qsm" that the QSM
// in-process client at KeyQSMClient provides, so the From chains once
// more:
//
//	<Value xsi:type="ReferenceObject" id="00000000000000000000000000000004">
//	  <From xsi:type="ReferenceObject" id="Qsm">
//	    <From xsi:type="ReferenceObject" id="010BA5DB9C7F48B0A242A0AD2EF73C54" />
//	  </From>
//	</Value>
//
// A registry entry may itself be a ReferenceObject with a From (an
// alias), so chains can run through several keys; package registry
// resolves them, reporting dangling keys and cycles.
//
// # Types
//
// A Type is a tuple of aspects: Interface, Category, Requires (the
// transport.Guarantee set the channel must give) and Security. Classes
// map ids to categories and requirements; TypeOf adds what an object's
// parameters ask for (a stream's "history" > 0 needs state transfer).
// Type.Weaker is the partial order of types and Type.CheckDriver checks a
// driver's guarantees against a type, with a message a user understands.
// An object of a class this project does not implement is still parsed,
// listed and shown; TypeOf returns an error naming the class.
//
// # Concurrency
//
// The package holds no goroutines and no mutable package state: the class
// table is fixed at start. An *Object or *Metadata is a plain value; it is
// not safe to modify one while another goroutine reads it (package
// registry hands out definitions that nobody modifies).
package objects
