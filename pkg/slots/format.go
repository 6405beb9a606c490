package slots

import (
	"maps"
	"slices"
	"strconv"
)

// FormatValue returns the canonical text of q as a quantity of the slot
// key, which ParseValue reads back to q: "8g", "1536m", "100b" and "0" for
// byte-valued keys, "4", "0.5" and "0.000001" for the others. A negative q
// (which no parse returns) is written with a leading '-'.
func FormatValue(key string, q Quantity) string {
	var buf [32]byte
	return string(appendValue(buf[:0], key, q))
}

// appendValue appends FormatValue(key, q) to b.
func appendValue(b []byte, key string, q Quantity) []byte {
	u := uint64(q)
	if q < 0 {
		b = append(b, '-')
		u = -u
	}
	if u == 0 {
		return append(b, '0')
	}
	if IsBytes(key) {
		for i := len("kmgtpe") - 1; i >= 0; i-- {
			shift := 10 * uint(i+1)
			if u&(1<<shift-1) == 0 {
				return append(strconv.AppendUint(b, u>>shift, 10), "kmgtpe"[i])
			}
		}
		return append(strconv.AppendUint(b, u, 10), 'b')
	}
	b = strconv.AppendUint(b, u/Scale, 10)
	frac := u % Scale
	if frac == 0 {
		return b
	}
	// Scale+frac is a 1 and then frac in exactly six digits.
	var buf [7]byte
	digits := strconv.AppendUint(buf[:0], Scale+frac, 10)[1:]
	for digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
	}
	b = append(b, '.')
	return append(b, digits...)
}

// Map returns the canonical wire form of s: each key's FormatValue.
// ParseMap(s.Map()) equals s.
func (s Set) Map() map[string]string {
	m := make(map[string]string, len(s))
	for k, q := range s {
		m[k] = FormatValue(k, q)
	}
	return m
}

// String returns s as comma-separated key=value entries in key order, as
// in "cpu=4,mem=8g"; the empty Set gives "". ParseList reads it back.
func (s Set) String() string {
	var b []byte
	for i, k := range slices.Sorted(maps.Keys(s)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, k...)
		b = append(b, '=')
		b = appendValue(b, k, s[k])
	}
	return string(b)
}
