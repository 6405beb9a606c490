package slots

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
)

// maxFracDigits is how many fractional digits of a byte value are looked
// at; later ones never change the truncated result. For a multiplier 2^s
// with s <= 60, the fraction f cut to p digits gives x = 2^s*f_p whose
// distance below the next integer is at least 2^s/10^p, while the digits
// past p add strictly less than that; so p = 60 suffices.
const maxFracDigits = 60

// mibShift is the size of a byte value written without a suffix: MiB.
const mibShift = 20

// ParseValue parses value as a quantity of the slot key, as described in
// the package documentation.
func ParseValue(key, value string) (Quantity, error) {
	if err := checkKey(key, value); err != nil {
		return 0, err
	}
	return parseValue(key, value)
}

// ParseOne parses one "key=value" entry, such as "cpu=4". Spaces around
// the key and the value are ignored.
func ParseOne(kv string) (key string, q Quantity, err error) {
	k, v, ok := strings.Cut(kv, "=")
	if !ok {
		return "", 0, fmt.Errorf("%w: %q is not key=value", ErrSyntax, kv)
	}
	k, v = strings.TrimSpace(k), strings.TrimSpace(v)
	if q, err = ParseValue(k, v); err != nil {
		return "", 0, err
	}
	return k, q, nil
}

// ParseList parses repeated -r flags into a Set. Each item holds one or
// more comma-separated key=value entries ("cpu=1,mem=2g"); empty entries
// are skipped, so no items at all give an empty Set. A key given twice is
// ErrDuplicateKey.
func ParseList(kvs []string) (Set, error) {
	s := make(Set, len(kvs))
	for _, item := range kvs {
		for entry := range strings.SplitSeq(item, ",") {
			if strings.TrimSpace(entry) == "" {
				continue
			}
			k, q, err := ParseOne(entry)
			if err != nil {
				return nil, err
			}
			if _, dup := s[k]; dup {
				return nil, fmt.Errorf("slot %q: %w: %q repeats it", k, ErrDuplicateKey, strings.TrimSpace(entry))
			}
			s[k] = q
		}
	}
	return s, nil
}

// ParseMap parses the wire form of a Set, as Set.Map writes it. Errors
// report the first bad key in sorted order.
func ParseMap(m map[string]string) (Set, error) {
	s := make(Set, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		q, err := ParseValue(k, m[k])
		if err != nil {
			return nil, err
		}
		s[k] = q
	}
	return s, nil
}

// parseValue parses value for a key already checked.
func parseValue(key, value string) (Quantity, error) {
	if value == "" {
		return 0, fmt.Errorf("slot %q: %w: empty value", key, ErrSyntax)
	}
	if isNonFinite(value) {
		return 0, fmt.Errorf("slot %q: %w: %q is not a finite number", key, ErrSyntax, value)
	}
	if len(value) > 1 && value[0] == '-' && (isDigit(value[1]) || value[1] == '.') {
		return 0, fmt.Errorf("slot %q: %w %q", key, ErrNegative, value)
	}

	end := 0
	for end < len(value) && (isDigit(value[end]) || value[end] == '.') {
		end++
	}
	whole, frac, _ := strings.Cut(value[:end], ".")
	if whole == "" && frac == "" || strings.Contains(frac, ".") {
		return 0, fmt.Errorf("slot %q: %w: %q is not a decimal number", key, ErrSyntax, value)
	}
	suffix := value[end:]

	if IsBytes(key) {
		shift, ok := byteShift(suffix)
		if !ok {
			if !isLetters(suffix) {
				return 0, fmt.Errorf("slot %q: %w: %q is not a decimal number with a size suffix", key, ErrSyntax, value)
			}
			return 0, fmt.Errorf("slot %q: %w %q in %q (use k, m, g, t, p or e)", key, ErrUnknownSuffix, suffix, value)
		}
		q, ok := bytesValue(whole, frac, shift)
		if !ok {
			return 0, fmt.Errorf("slot %q: %w: %q is more than %d bytes", key, ErrOverflow, value, math.MaxInt64)
		}
		return q, nil
	}

	if suffix != "" {
		if !isLetters(suffix) {
			return 0, fmt.Errorf("slot %q: %w: %q is not a decimal number", key, ErrSyntax, value)
		}
		return 0, fmt.Errorf("slot %q: %w %q in %q (only byte-valued slots such as mem take one)", key, ErrUnknownSuffix, suffix, value)
	}
	if len(frac) > 6 && strings.TrimRight(frac[6:], "0") != "" {
		return 0, fmt.Errorf("slot %q: %w in %q (at most 6)", key, ErrPrecision, value)
	}
	q, ok := scaledValue(whole, frac)
	if !ok {
		return 0, fmt.Errorf("slot %q: %w: %q is more than %s", key, ErrOverflow, value, FormatValue(key, math.MaxInt64))
	}
	return q, nil
}

// scaledValue returns whole.frac in micro-units; frac has no nonzero digit
// past the sixth. ok is false on overflow.
func scaledValue(whole, frac string) (q Quantity, ok bool) {
	n, ok := wholeValue(whole, math.MaxInt64/Scale)
	if !ok {
		return 0, false
	}
	var f uint64
	for i := range 6 {
		f *= 10
		if i < len(frac) {
			f += uint64(frac[i] - '0')
		}
	}
	n = n*Scale + f
	if n > math.MaxInt64 {
		return 0, false
	}
	return Quantity(n), true
}

// bytesValue returns whole.frac << shift, the fraction truncated toward
// zero. ok is false on overflow.
func bytesValue(whole, frac string, shift uint) (q Quantity, ok bool) {
	n, ok := wholeValue(whole, math.MaxInt64>>shift)
	if !ok {
		return 0, false
	}
	// n <= (2^63-1) >> shift and the fraction adds less than 1 << shift,
	// so the sum stays below 2^63.
	return Quantity(n<<shift + fracBytes(frac, shift)), true
}

// wholeValue returns the decimal digits s as a number, or ok false if it
// is above limit. An empty s is zero.
func wholeValue(s string, limit uint64) (n uint64, ok bool) {
	for i := 0; i < len(s); i++ {
		d := uint64(s[i] - '0')
		if n > limit/10 || d > limit-n*10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// fracBytes returns floor(0.digits << shift). It doubles the decimal
// fraction shift times, collecting the carries out of the point.
func fracBytes(digits string, shift uint) uint64 {
	var buf [maxFracDigits]byte
	digits = strings.TrimRight(digits[:min(len(digits), maxFracDigits)], "0")
	if shift == 0 || digits == "" {
		return 0
	}
	p := copy(buf[:], digits)
	for i := range p {
		buf[i] -= '0'
	}
	var n uint64
	for range shift {
		var carry byte
		for i := p - 1; i >= 0; i-- {
			v := buf[i]*2 + carry
			carry = v / 10
			buf[i] = v % 10
		}
		n = n<<1 | uint64(carry)
	}
	return n
}

// byteShift returns the power of two that a byte value's suffix stands for.
func byteShift(suffix string) (shift uint, ok bool) {
	switch {
	case suffix == "":
		return mibShift, true
	case strings.EqualFold(suffix, "b"):
		return 0, true
	}
	i := strings.IndexByte("kmgtpe", lower(suffix[0]))
	if i < 0 {
		return 0, false
	}
	switch rest := suffix[1:]; {
	case rest == "", strings.EqualFold(rest, "i"), strings.EqualFold(rest, "b"), strings.EqualFold(rest, "ib"):
		return 10 * uint(i+1), true
	}
	return 0, false
}

// isNonFinite reports whether s spells an infinity or NaN, as
// strconv.ParseFloat would take it.
func isNonFinite(s string) bool {
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	return strings.EqualFold(s, "inf") || strings.EqualFold(s, "infinity") || strings.EqualFold(s, "nan")
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isLetters reports whether s is all ASCII letters.
func isLetters(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := lower(s[i]); c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// lower returns the ASCII letter c in lower case; any other byte unchanged.
func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
