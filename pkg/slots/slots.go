package slots

import (
	"errors"
	"fmt"
	"strings"
)

// Quantity is an amount of one slot, in fixed point: bytes for byte-valued
// keys (see IsBytes) and micro-units (1/Scale) for every other key.
type Quantity int64

// Scale is the number of Quantity units in one whole unit of a key that is
// not byte-valued: cpu=1 is Quantity(Scale).
const Scale = 1_000_000

// MaxKeyLen is the longest slot key allowed, in bytes.
const MaxKeyLen = 64

// Set holds a quantity for each slot key. A missing key means zero.
type Set map[string]Quantity

// The sentinel errors. Every error this package returns wraps one of them
// (test with errors.Is) and adds the slot key and value concerned.
var (
	// ErrSyntax: a value is not a decimal number (empty, NaN, Inf, an
	// exponent, a '+' sign, stray characters), or an entry is not key=value.
	ErrSyntax = errors.New("invalid syntax")
	// ErrUnknownSuffix: a byte value has a suffix other than k, m, g, t, p
	// or e (each optionally followed by i, b or ib) or b, or a value that is
	// not byte-valued has any suffix at all.
	ErrUnknownSuffix = errors.New("unknown size suffix")
	// ErrNegative: a value is negative, or Sub would leave a slot below zero.
	ErrNegative = errors.New("negative quantity")
	// ErrOverflow: a value or the result of Add or Sub does not fit a
	// Quantity.
	ErrOverflow = errors.New("quantity out of range")
	// ErrEmptyKey: a slot key is empty, as in "=4".
	ErrEmptyKey = errors.New("empty slot key")
	// ErrDuplicateKey: ParseList was given the same key twice.
	ErrDuplicateKey = errors.New("duplicate slot key")
	// ErrPrecision: a value that is not byte-valued has a nonzero digit
	// past the sixth fractional place.
	ErrPrecision = errors.New("too many fractional digits")
	// ErrInvalidKey: a slot key is too long, does not start with a
	// lowercase letter, or holds a character other than a lowercase letter,
	// a digit, '.', '-' or '_'.
	ErrInvalidKey = errors.New("invalid slot key")
)

// IsBytes reports whether key counts bytes: "mem" and any key ending in
// ".mem" (such as "cuda.mem") do.
func IsBytes(key string) bool {
	return key == "mem" || strings.HasSuffix(key, ".mem")
}

// checkKey reports whether key is a valid slot key; value, the value given
// with it, only goes into the error message.
func checkKey(key, value string) error {
	if key == "" {
		return fmt.Errorf("%w for value %q", ErrEmptyKey, value)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w %q: longer than %d characters", ErrInvalidKey, key, MaxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z':
		case i > 0 && ('0' <= c && c <= '9' || c == '.' || c == '-' || c == '_'):
		default:
			return fmt.Errorf("%w %q: must start with a lowercase letter and hold only lowercase letters, digits, '.', '-' and '_'", ErrInvalidKey, key)
		}
	}
	return nil
}
