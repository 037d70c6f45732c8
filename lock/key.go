package lock

import (
	"fmt"
	"strconv"
	"strings"
)

// A Resource names one lockable thing, such as an order or the inventory of
// a ticket type. Build one with Key; Acquire refuses the zero value.
type Resource struct {
	// name is the escaped, colon-joined parts. It never contains '{' or '}',
	// so it can sit inside a Redis Cluster hash tag as it is.
	name string
	// kindLen is the length of the first (escaped) part within name.
	kindLen int
}

// Key builds a Resource from typed parts, most general first:
//
//	lock.Key("order", orderID)
//	lock.Key("ticket_type", typeID, "inventory")
//
// Each part may be a string, any integer type, or a fmt.Stringer, and is
// escaped so that no part can run into the next: Key("a:b") and Key("a", "b")
// differ. Parts are compared by their text, so Key("order", 42) equals
// Key("order", "42"). The first part is the resource's kind; it is the only
// part that metrics may carry as a label, so keep it a constant.
//
// Key panics on an empty part list, an empty kind or a part of another
// type: each is a mistake in the program, not in its input.
func Key(parts ...any) Resource {
	if len(parts) == 0 {
		panic("lock: Key needs at least one part")
	}
	if s, ok := parts[0].(string); ok && s == "" {
		panic("lock: Key needs a non-empty kind")
	}
	var b strings.Builder
	kindLen := 0
	for i, p := range parts {
		if i > 0 {
			b.WriteByte(':')
		}
		escape(&b, partText(p))
		if i == 0 {
			kindLen = b.Len()
		}
	}
	return Resource{name: b.String(), kindLen: kindLen}
}

func partText(p any) string {
	switch v := p.(type) {
	case string:
		return v
	case int:
		return strconv.FormatInt(int64(v), 10)
	case int8:
		return strconv.FormatInt(int64(v), 10)
	case int16:
		return strconv.FormatInt(int64(v), 10)
	case int32:
		return strconv.FormatInt(int64(v), 10)
	case int64:
		return strconv.FormatInt(v, 10)
	case uint:
		return strconv.FormatUint(uint64(v), 10)
	case uint8:
		return strconv.FormatUint(uint64(v), 10)
	case uint16:
		return strconv.FormatUint(uint64(v), 10)
	case uint32:
		return strconv.FormatUint(uint64(v), 10)
	case uint64:
		return strconv.FormatUint(v, 10)
	case fmt.Stringer:
		return v.String()
	default:
		panic(fmt.Sprintf("lock: Key part of type %T; use a string, an integer or a fmt.Stringer", p))
	}
}

// escape percent-encodes the separator, the escape character itself and the
// hash-tag braces; everything else is kept readable.
func escape(b *strings.Builder, s string) {
	for i := range len(s) {
		switch c := s[i]; c {
		case '%', ':', '{', '}':
			b.WriteByte('%')
			b.WriteByte("0123456789ABCDEF"[c>>4])
			b.WriteByte("0123456789ABCDEF"[c&15])
		default:
			b.WriteByte(c)
		}
	}
}

// String returns the resource's escaped name, for example "order:42". It is
// unique per resource and fit for logs and span attributes, but not for
// metric labels: use Kind there.
func (r Resource) String() string { return r.name }

// Kind returns the first part of the resource, escaped: "order" for
// Key("order", 42). It has low cardinality when the first part is a
// constant, which is what makes it usable as a metric label.
func (r Resource) Kind() string { return r.name[:r.kindLen] }

// keys are the Redis keys of one resource. All four share the hash tag
// {name}, so a script may touch them together on Redis Cluster.
type keys struct {
	lock, fence, queue, wanted string
}

func (r Resource) redisKeys(prefix string) keys {
	base := prefix + "{" + r.name + "}"
	return keys{lock: base, fence: base + ":fence", queue: base + ":queue", wanted: base + ":wanted"}
}

// keysPer is how many keys of each resource the acquire and release
// scripts take.
const keysPer = 4
