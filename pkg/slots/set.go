package slots

import (
	"fmt"
	"maps"
)

// Clone returns a copy of s; it is never nil.
func (s Set) Clone() Set {
	c := make(Set, len(s))
	maps.Copy(c, s)
	return c
}

// Add returns a new Set holding s + o for every key of either. If a sum
// does not fit a Quantity, it returns ErrOverflow naming the first such key
// in sorted order.
func (s Set) Add(o Set) (Set, error) {
	r := make(Set, max(len(s), len(o)))
	maps.Copy(r, s)
	var (
		bad    bool
		badKey string
	)
	for k, b := range o {
		a := r[k]
		sum := a + b
		if (b > 0 && sum < a) || (b < 0 && sum > a) {
			if !bad || k < badKey {
				bad, badKey = true, k
			}
			continue
		}
		r[k] = sum
	}
	if bad {
		return nil, fmt.Errorf("slot %q: %w: %s + %s", badKey, ErrOverflow,
			FormatValue(badKey, s[badKey]), FormatValue(badKey, o[badKey]))
	}
	return r, nil
}

// Sub returns a new Set holding s - o for every key of either. If that
// leaves a key of o below zero it returns ErrNegative, and if a difference
// does not fit a Quantity ErrOverflow, naming the first such key in sorted
// order.
func (s Set) Sub(o Set) (Set, error) {
	r := make(Set, max(len(s), len(o)))
	maps.Copy(r, s)
	var (
		bad    bool
		badKey string
	)
	for k, b := range o {
		a := r[k]
		diff := a - b
		if (b > 0 && diff > a) || (b < 0 && diff < a) || diff < 0 {
			if !bad || k < badKey {
				bad, badKey = true, k
			}
			continue
		}
		r[k] = diff
	}
	if bad {
		a, b := s[badKey], o[badKey]
		err := ErrNegative
		if diff := a - b; (b > 0 && diff > a) || (b < 0 && diff < a) {
			err = ErrOverflow
		}
		return nil, fmt.Errorf("slot %q: %w: %s - %s", badKey, err,
			FormatValue(badKey, a), FormatValue(badKey, b))
	}
	return r, nil
}

// Fits reports whether s fits in capacity: whether every key that s holds
// more than zero of has at least as much in capacity. A key missing from
// capacity has none.
func (s Set) Fits(capacity Set) bool {
	for k, q := range s {
		if q > 0 && q > capacity[k] {
			return false
		}
	}
	return true
}

// Equal reports whether s and o hold the same quantity of every key; a key
// holding zero equals a missing one.
func (s Set) Equal(o Set) bool {
	for k, q := range s {
		if o[k] != q {
			return false
		}
	}
	for k, q := range o {
		if s[k] != q {
			return false
		}
	}
	return true
}

// IsZero reports whether s holds nothing: no keys, or only zero ones.
func (s Set) IsZero() bool {
	for _, q := range s {
		if q != 0 {
			return false
		}
	}
	return true
}
