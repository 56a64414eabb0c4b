package relay

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/liveobjects/liveobjects/transport"
)

// Store layout (bbolt):
//
//	meta/version        storeVersion (u32)
//	meta/epoch          u64, chosen when the file is created
//	channels/<name>     record: channel info (id, comment)
//	clients/<clientID>  record: last publish counter, its seq
//	c/<name>/           one bucket per channel:
//	    log/<seq u64>   record: event (counter, client, sender, data)
//	    cp              record: checkpoint (seq, data)
//	    base            u64: history at or below base is gone (compaction
//	                    or trimming); the log holds base+1..last
//
// Every record starts with a version byte and a CRC-32C of the rest, so a
// damaged file is reported, not misread.
const storeVersion = 1

const recVersion = 1

var (
	bMeta     = []byte("meta")
	bChannels = []byte("channels")
	bClients  = []byte("clients")
	bChan     = []byte("c")
	bLog      = []byte("log")
	kCP       = []byte("cp")
	kBase     = []byte("base")
	kVersion  = []byte("version")
	kEpoch    = []byte("epoch")
)

// Errors of stored records, distinct so a damaged store says what is wrong.
var (
	// ErrStoreVersion is returned when the store was written by a newer
	// format version.
	ErrStoreVersion = fmt.Errorf("%w: unsupported format version", ErrStore)
	// ErrStoreChecksum is returned when a stored record fails its checksum.
	ErrStoreChecksum = fmt.Errorf("%w: record checksum mismatch", ErrStore)
	// ErrStoreRecord is returned when a stored record cannot be decoded.
	ErrStoreRecord = fmt.Errorf("%w: malformed record", ErrStore)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func sealRecord(body []byte) []byte {
	out := make([]byte, 5, 5+len(body))
	out[0] = recVersion
	binary.BigEndian.PutUint32(out[1:], crc32.Checksum(body, castagnoli))
	return append(out, body...)
}

// openRecord checks a record and returns its body, copied out of bolt memory.
func openRecord(v []byte) ([]byte, error) {
	if len(v) < 5 {
		return nil, ErrStoreRecord
	}
	if v[0] != recVersion {
		return nil, fmt.Errorf("%w (record version %d)", ErrStoreVersion, v[0])
	}
	body := v[5:]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(v[1:]) {
		return nil, ErrStoreChecksum
	}
	return append([]byte(nil), body...), nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// boltStore is the durable log. Only the committer goroutine writes; the
// server reads it once at startup.
type boltStore struct {
	db   *bolt.DB
	path string
}

// storedChannel is one channel as loaded at startup.
type storedChannel struct {
	info   transport.ChannelInfo
	base   uint64
	cpSeq  uint64
	cp     []byte
	events []storedEvent
}

type storedEvent struct {
	seq     uint64
	counter uint64
	client  string
	sender  string
	data    []byte
}

type storedClient struct {
	counter uint64
	seq     uint64
}

func openStore(dir string, noSync bool) (*boltStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("relay: store: %w", err)
	}
	path := filepath.Join(dir, "relay.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        2 * time.Second,
		NoSync:         noSync,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("relay: store %s is locked by another process (is another relay running with this data directory?): %w", path, err)
		}
		return nil, fmt.Errorf("relay: open store %s: %w", path, err)
	}
	return &boltStore{db: db, path: path}, nil
}

func (st *boltStore) close() error { return st.db.Close() }

// load reads the whole store (the epoch, every channel's checkpoint and
// log tail, the clients' last publish counters), creating it when empty.
func (st *boltStore) load() (epoch uint64, chans []storedChannel, clients map[string]storedClient, err error) {
	clients = map[string]storedClient{}
	err = st.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(kVersion); v != nil {
			if len(v) != 4 || binary.BigEndian.Uint32(v) != storeVersion {
				return fmt.Errorf("%w (store version %x, this relay reads %d)", ErrStoreVersion, v, storeVersion)
			}
		} else if err := meta.Put(kVersion, binary.BigEndian.AppendUint32(nil, storeVersion)); err != nil {
			return err
		}
		if v := meta.Get(kEpoch); len(v) == 8 {
			epoch = binary.BigEndian.Uint64(v)
		} else {
			epoch = newEpoch()
			if err := meta.Put(kEpoch, seqKey(epoch)); err != nil {
				return err
			}
		}
		for _, name := range [][]byte{bChannels, bClients, bChan} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bClients).ForEach(func(k, v []byte) error {
			body, err := openRecord(v)
			if err != nil {
				return fmt.Errorf("client %q: %w", k, err)
			}
			d := dec{b: body}
			c := storedClient{counter: d.u64(), seq: d.u64()}
			if err := d.end(); err != nil {
				return fmt.Errorf("client %q: %w: %v", k, ErrStoreRecord, err)
			}
			clients[string(k)] = c
			return nil
		}); err != nil {
			return err
		}
		cb := tx.Bucket(bChan)
		return tx.Bucket(bChannels).ForEach(func(k, v []byte) error {
			body, err := openRecord(v)
			if err != nil {
				return fmt.Errorf("channel %q: %w", k, err)
			}
			d := dec{b: body}
			sc := storedChannel{info: transport.ChannelInfo{Name: string(k), ID: d.str(), Comment: d.str(), Members: -1}}
			if err := d.end(); err != nil {
				return fmt.Errorf("channel %q: %w: %v", k, ErrStoreRecord, err)
			}
			if b := cb.Bucket(k); b != nil {
				if v := b.Get(kBase); len(v) == 8 {
					sc.base = binary.BigEndian.Uint64(v)
				}
				if v := b.Get(kCP); v != nil {
					body, err := openRecord(v)
					if err != nil {
						return fmt.Errorf("channel %q checkpoint: %w", k, err)
					}
					d := dec{b: body}
					sc.cpSeq = d.u64()
					sc.cp = d.bytes(1 << 40)
					if err := d.end(); err != nil {
						return fmt.Errorf("channel %q checkpoint: %w: %v", k, ErrStoreRecord, err)
					}
				}
				if lb := b.Bucket(bLog); lb != nil {
					if err := lb.ForEach(func(k2, v2 []byte) error {
						if len(k2) != 8 {
							return ErrStoreRecord
						}
						seq := binary.BigEndian.Uint64(k2)
						if seq <= sc.base {
							return nil // left over from a trim; ignore
						}
						body, err := openRecord(v2)
						if err != nil {
							return fmt.Errorf("channel %q event %d: %w", k, seq, err)
						}
						d := dec{b: body}
						ev := storedEvent{seq: seq, counter: d.u64(), client: d.str(), sender: d.str(), data: d.bytes(1 << 31)}
						if err := d.end(); err != nil {
							return fmt.Errorf("channel %q event %d: %w: %v", k, seq, ErrStoreRecord, err)
						}
						if want := sc.base + uint64(len(sc.events)) + 1; seq != want {
							return fmt.Errorf("channel %q: %w: log has event %d where %d was expected", k, ErrStoreRecord, seq, want)
						}
						sc.events = append(sc.events, ev)
						return nil
					}); err != nil {
						return err
					}
				}
			}
			chans = append(chans, sc)
			return nil
		})
	})
	if err != nil {
		return 0, nil, nil, fmt.Errorf("relay: load store %s: %w", st.path, err)
	}
	return epoch, chans, clients, nil
}

func newEpoch() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if e := binary.BigEndian.Uint64(b[:]); e != 0 {
			return e
		}
	}
}

// Kinds of committer items.
const (
	opEvent   = iota + 1 // append an event (and remember the client's counter)
	opAck                // only acknowledge after everything before is on disk
	opCP                 // store a checkpoint and delete the log up to it
	opTrim               // delete the log up to base without a checkpoint
	opChannel            // create a channel
	opRemove             // remove a channel and all it holds
	opRename             // store a channel held under from under info.Name
)

// citem is one thing for the committer to write.
type citem struct {
	op      int
	ch      *channel
	ev      *event
	c       *sconn // who to acknowledge, if anyone
	counter uint64
	seq     uint64
	data    []byte
	info    transport.ChannelInfo
	from    string // opRename: the name the channel is stored under
	done    chan error
}

// copyBucket copies every key and nested bucket of src into dst.
func copyBucket(dst, src *bolt.Bucket) error {
	return src.ForEach(func(k, v []byte) error {
		if v != nil {
			return dst.Put(k, v)
		}
		d, err := dst.CreateBucketIfNotExists(k)
		if err != nil {
			return err
		}
		return copyBucket(d, src.Bucket(k))
	})
}

// deleteThrough deletes the log's events up to seq. The keys are listed
// first and then deleted one by one: restarting a cursor at First after
// each delete walks every emptied node again, which is quadratic in the
// events deleted (a compaction of 15,000 1 KiB events took a second).
func deleteThrough(lb *bolt.Bucket, seq uint64) error {
	var seqs []uint64
	c := lb.Cursor()
	for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= seq; k, _ = c.Next() {
		seqs = append(seqs, binary.BigEndian.Uint64(k))
	}
	var key [8]byte
	for _, s := range seqs {
		binary.BigEndian.PutUint64(key[:], s)
		if err := lb.Delete(key[:]); err != nil {
			return err
		}
	}
	return nil
}

// write applies items in one transaction.
func (st *boltStore) write(items []citem) error {
	return st.db.Update(func(tx *bolt.Tx) error {
		cb := tx.Bucket(bChan)
		clients := tx.Bucket(bClients)
		type last struct{ counter, seq uint64 }
		lastBy := map[string]last{}
		var logs = map[*channel]*bolt.Bucket{}
		logOf := func(ch *channel) (*bolt.Bucket, error) {
			if b, ok := logs[ch]; ok {
				return b, nil
			}
			b, err := cb.CreateBucketIfNotExists([]byte(ch.info.Name))
			if err != nil {
				return nil, err
			}
			lb, err := b.CreateBucketIfNotExists(bLog)
			if err != nil {
				return nil, err
			}
			lb.FillPercent = 1.0 // keys only grow
			logs[ch] = lb
			return lb, nil
		}
		var buf []byte
		for i := range items {
			it := &items[i]
			switch it.op {
			case opEvent:
				lb, err := logOf(it.ch)
				if err != nil {
					return err
				}
				ev := it.ev
				buf = putU64(buf[:0], ev.counter)
				buf = putStr(buf, ev.client)
				buf = putStr(buf, ev.sender)
				buf = putBytes(buf, ev.data())
				if err := lb.Put(seqKey(ev.seq), sealRecord(buf)); err != nil {
					return err
				}
				if ev.client != "" {
					lastBy[ev.client] = last{ev.counter, ev.seq}
				}
			case opCP, opTrim:
				b, err := cb.CreateBucketIfNotExists([]byte(it.ch.info.Name))
				if err != nil {
					return err
				}
				if it.op == opCP {
					rec := putU64(nil, it.seq)
					rec = putBytes(rec, it.data)
					if err := b.Put(kCP, sealRecord(rec)); err != nil {
						return err
					}
				}
				if err := b.Put(kBase, seqKey(it.seq)); err != nil {
					return err
				}
				lb, err := logOf(it.ch)
				if err != nil {
					return err
				}
				if err := deleteThrough(lb, it.seq); err != nil {
					return err
				}
			case opChannel:
				rec := putStr(nil, it.info.ID)
				rec = putStr(rec, it.info.Comment)
				if err := tx.Bucket(bChannels).Put([]byte(it.info.Name), sealRecord(rec)); err != nil {
					return err
				}
			case opRename:
				rec := putStr(nil, it.info.ID)
				rec = putStr(rec, it.info.Comment)
				if err := tx.Bucket(bChannels).Put([]byte(it.info.Name), sealRecord(rec)); err != nil {
					return err
				}
				if old := cb.Bucket([]byte(it.from)); old != nil {
					nb, err := cb.CreateBucket([]byte(it.info.Name))
					if err != nil {
						return err
					}
					if err := copyBucket(nb, old); err != nil {
						return err
					}
					if err := cb.DeleteBucket([]byte(it.from)); err != nil {
						return err
					}
				}
				if err := tx.Bucket(bChannels).Delete([]byte(it.from)); err != nil {
					return err
				}
			case opRemove:
				if err := tx.Bucket(bChannels).Delete([]byte(it.info.Name)); err != nil {
					return err
				}
				if cb.Bucket([]byte(it.info.Name)) != nil {
					if err := cb.DeleteBucket([]byte(it.info.Name)); err != nil {
						return err
					}
				}
				delete(logs, it.ch)
			}
		}
		for id, l := range lastBy {
			if err := clients.Put([]byte(id), sealRecord(putU64(putU64(nil, l.counter), l.seq))); err != nil {
				return err
			}
		}
		return nil
	})
}
