// Package slots parses, formats and does exact arithmetic on resource slots
// as in Backend.AI: the "-r cpu=4 -r mem=8g -r cuda.shares=0.5" of the
// command line, the map[string]string of the wire, and the Set that the
// scheduler adds, subtracts and compares against an agent's capacity.
//
// # Keys
//
// A slot key is 1 to 64 characters of lowercase ASCII letters, digits, '.',
// '-' and '_', starting with a letter: "cpu", "mem", "cuda.shares",
// "cuda.device".
//
// # Units
//
// A Quantity is a fixed-point int64 whose unit depends on the key.
// Byte-valued keys ("mem" and any key ending in ".mem", see IsBytes) count
// bytes. Every other key counts micro-units, 1/Scale of one: cpu=4 is
// Quantity(4_000_000) and cuda.shares=0.5 is Quantity(500_000).
//
// # Values
//
// A value is a plain decimal number: digits with at most one '.', no sign,
// no exponent, no spaces. A leading '-' is ErrNegative; "NaN", "Inf" and
// the like are ErrSyntax.
//
// A byte value may carry a size suffix k, m, g, t, p or e (any case),
// optionally followed by "i", "b" or "ib"; all of them are powers of 1024,
// so "8g", "8G", "8gb", "8gib" and "8GiB" all mean 8 << 30 bytes. The
// suffix "b" alone means bytes. A bare number means MiB, as Backend.AI's
// client has it: mem=512 is 512 << 20 bytes. Fractions are exact: "1.5g" is
// 1610612736 bytes; a fraction that does not come to a whole number of
// bytes is truncated toward zero ("0.5b" is 0, "1.0000001k" is 1024).
//
// Any other value takes no suffix and at most 6 significant fractional
// digits; a nonzero seventh digit is ErrPrecision (trailing zeros past the
// sixth are fine).
//
// Only integer arithmetic is used, so there is no rounding drift: adding
// cuda.shares=0.1 ten times gives exactly 1. Results that do not fit an
// int64 are ErrOverflow; nothing wraps.
//
// # Canonical form
//
// FormatValue writes the canonical form that ParseValue reads back to the
// same Quantity. A byte value is written with the largest of e, p, t, g, m
// and k that divides it exactly ("8g", "1536m"), in bytes with a "b" suffix
// when none does ("100b"), and as "0" when zero. Any other value is a
// decimal with trailing zeros stripped ("4", "0.5", "0.000001"). For every
// Set s of valid keys and non-negative quantities, ParseMap(s.Map()) and
// ParseList(strings.Split(s.String(), ",")) equal s.
//
// # Errors
//
// Every error returned wraps exactly one of the sentinel errors (ErrSyntax,
// ErrNegative, ...) and names the slot key and the offending value, as in
//
//	slot "mem": unknown size suffix "x" in "8x" (use k, m, g, t, p or e)
package slots
