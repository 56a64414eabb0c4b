package qsm

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"sort"
)

// GroupID returns the 64-bit id of a group (channel) name: FNV-1a of the
// name. Every node computes it the same way.
func GroupID(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	v := h.Sum64()
	if v == 0 {
		v = 1
	}
	return v
}

// regionID returns the id of the region of nodes whose group set is gs
// (sorted ascending): FNV-1a over the ids.
func regionID(gs []uint64) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for _, g := range gs {
		binary.BigEndian.PutUint64(b[:], g)
		h.Write(b[:])
	}
	v := h.Sum64()
	if v == 0 {
		v = 1
	}
	return v
}

// NodeInfo describes one node (local service) in a view.
type NodeInfo struct {
	// ID is the node's random 64-bit id, chosen when its service starts.
	ID uint64
	// Name is a human-readable name (host:port by default).
	Name string
	// Addr is the node's unicast UDP address for tokens, acks and repairs.
	Addr netip.AddrPort
}

// Region is a set of nodes that belong to exactly the same groups.
type Region struct {
	// ID is regionID(Groups).
	ID uint64
	// Epoch is the view number in which the region's member set last
	// changed.
	Epoch uint64
	// Addr is the region's multicast address (the port is Config.Port).
	Addr netip.Addr
	// Members are the node ids, ascending.
	Members []uint64
	// Groups are the group ids, ascending.
	Groups []uint64
}

// View is a numbered membership view issued by the coordinator. Every node
// receives the same views in the same order.
type View struct {
	// Number increases with every view.
	Number uint64
	// Nodes are the live nodes, by ascending id.
	Nodes []NodeInfo
	// Regions are the regions, by ascending id.
	Regions []Region
}

func (v *View) encode() []byte {
	e := encoder{}
	e.u64(v.Number)
	e.u32(uint32(len(v.Nodes)))
	for _, n := range v.Nodes {
		e.u64(n.ID)
		e.str(n.Name)
		e.str(n.Addr.String())
	}
	e.u32(uint32(len(v.Regions)))
	for _, r := range v.Regions {
		e.u64(r.ID)
		e.u64(r.Epoch)
		a := r.Addr.As4()
		e.b = append(e.b, a[:]...)
		e.u32(uint32(len(r.Members)))
		for _, m := range r.Members {
			e.u64(m)
		}
		e.u32(uint32(len(r.Groups)))
		for _, g := range r.Groups {
			e.u64(g)
		}
	}
	return e.b
}

func decodeView(p []byte) (*View, error) {
	d := decoder{b: p}
	v := &View{Number: d.u64()}
	nn := d.count(12)
	for i := 0; i < nn && d.err == nil; i++ {
		n := NodeInfo{ID: d.u64(), Name: d.str()}
		as := d.str()
		if d.err == nil {
			ap, err := netip.ParseAddrPort(as)
			if err != nil {
				return nil, fmt.Errorf("%w: view node address %q", ErrMalformed, as)
			}
			n.Addr = ap
		}
		v.Nodes = append(v.Nodes, n)
	}
	nr := d.count(28)
	for i := 0; i < nr && d.err == nil; i++ {
		r := Region{ID: d.u64(), Epoch: d.u64()}
		if a := d.take(4); a != nil {
			r.Addr = netip.AddrFrom4([4]byte(a))
		}
		nm := d.count(8)
		for j := 0; j < nm && d.err == nil; j++ {
			r.Members = append(r.Members, d.u64())
		}
		ng := d.count(8)
		r.Groups = make([]uint64, 0, ng)
		for j := 0; j < ng && d.err == nil; j++ {
			r.Groups = append(r.Groups, d.u64())
		}
		v.Regions = append(v.Regions, r)
	}
	if err := d.done(); err != nil {
		return nil, err
	}
	return v, nil
}

// scopedMulticast is the range every region address lies in: the
// "multicast" setting must be a prefix inside it.
var scopedMulticast = netip.MustParsePrefix("239.0.0.0/8")

// check reports what makes v a view no coordinator issues: nodes not
// by strictly ascending id, regions not by strictly ascending id, a
// region address outside 239.0.0.0/8, members or groups not strictly
// ascending, a member that is not a node of the view or that is in two
// regions. A service keeps its current view rather than install such a
// one: lookups in it assume the order.
func (v *View) check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: view %d: %s", ErrMalformed, v.Number, fmt.Sprintf(format, a...))
	}
	for i, n := range v.Nodes {
		if n.ID == 0 || i > 0 && n.ID <= v.Nodes[i-1].ID {
			return bad("node %016x out of order or repeated", n.ID)
		}
	}
	inRegion := make(map[uint64]bool, len(v.Nodes))
	for i, r := range v.Regions {
		if r.ID == 0 || i > 0 && r.ID <= v.Regions[i-1].ID {
			return bad("region %016x out of order or repeated", r.ID)
		}
		if !r.Addr.Is4() || !r.Addr.IsMulticast() || !scopedMulticast.Contains(r.Addr) {
			return bad("region %016x has address %v, not a multicast address in %v", r.ID, r.Addr, scopedMulticast)
		}
		if len(r.Members) == 0 {
			return bad("region %016x has no members", r.ID)
		}
		for j, m := range r.Members {
			if j > 0 && m <= r.Members[j-1] {
				return bad("region %016x: member %016x out of order or repeated", r.ID, m)
			}
			if v.node(m) == nil {
				return bad("region %016x: member %016x is not a node of the view", r.ID, m)
			}
			if inRegion[m] {
				return bad("node %016x is in two regions", m)
			}
			inRegion[m] = true
		}
		for j, g := range r.Groups {
			if j > 0 && g <= r.Groups[j-1] {
				return bad("region %016x: group %016x out of order or repeated", r.ID, g)
			}
		}
	}
	return nil
}

// node returns the node with id, or nil.
func (v *View) node(id uint64) *NodeInfo {
	i := sort.Search(len(v.Nodes), func(i int) bool { return v.Nodes[i].ID >= id })
	if i < len(v.Nodes) && v.Nodes[i].ID == id {
		return &v.Nodes[i]
	}
	return nil
}

// regionOf returns the region node id belongs to, or nil.
func (v *View) regionOf(id uint64) *Region {
	for i := range v.Regions {
		if _, ok := slices.BinarySearch(v.Regions[i].Members, id); ok {
			return &v.Regions[i]
		}
	}
	return nil
}

// regionsOfGroup returns the regions whose nodes belong to group g.
func (v *View) regionsOfGroup(g uint64) []*Region {
	var out []*Region
	for i := range v.Regions {
		if _, ok := slices.BinarySearch(v.Regions[i].Groups, g); ok {
			out = append(out, &v.Regions[i])
		}
	}
	return out
}

// partitions splits sorted members into rings of about size nodes; a last
// ring smaller than half the size joins the one before.
func partitions(members []uint64, size int) [][]uint64 {
	var out [][]uint64
	for i := 0; i < len(members); i += size {
		end := min(i+size, len(members))
		out = append(out, members[i:end])
	}
	if n := len(out); n > 1 && len(out[n-1]) < (size+1)/2 {
		last := out[n-1]
		out = out[:n-1]
		merged := append(slices.Clone(out[n-2]), last...)
		out[n-2] = merged
	}
	return out
}

// mix64 scrambles x (the finalizer of SplitMix64), so that sums of
// scrambled node ids tell sets of nodes apart.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
