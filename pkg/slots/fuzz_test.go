package slots

import (
	"errors"
	"strings"
	"testing"
)

var sentinels = []error{
	ErrSyntax, ErrUnknownSuffix, ErrNegative, ErrOverflow,
	ErrEmptyKey, ErrDuplicateKey, ErrPrecision, ErrInvalidKey,
}

// checkSentinel fails t unless err wraps exactly one sentinel error.
func checkSentinel(t *testing.T, err error) {
	t.Helper()
	n := 0
	for _, s := range sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("error %q wraps %d sentinel errors, want 1", err, n)
	}
}

func FuzzParseValue(f *testing.F) {
	for _, seed := range []struct{ key, value string }{
		{"cpu", "4"}, {"mem", "8g"}, {"mem", "512"}, {"mem", "1.5g"},
		{"cuda.shares", "0.5"}, {"cuda.device", "1"}, {"mem", "8GiB"},
		{"mem", "100b"}, {"mem", "7.99e"}, {"cpu", "0.000001"},
		{"cpu", "NaN"}, {"cpu", "-1"}, {"mem", "8x"}, {"cpu", "1e6"},
		{"cpu", "9223372036854.775807"}, {"mem", "0.1234567891k"},
		{"cuda.mem", "0." + strings.Repeat("3", 70) + "e"}, {"", "1"},
	} {
		f.Add(seed.key, seed.value)
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		q, err := ParseValue(key, value)
		if err != nil {
			checkSentinel(t, err)
			return
		}
		if q < 0 {
			t.Fatalf("ParseValue(%q, %q) = %d, negative", key, value, q)
		}
		text := FormatValue(key, q)
		back, err := ParseValue(key, text)
		if err != nil || back != q {
			t.Fatalf("ParseValue(%q, %q) = %d; FormatValue = %q; parsed back %d, %v", key, value, q, text, back, err)
		}
		if again := FormatValue(key, back); again != text {
			t.Fatalf("FormatValue not canonical: %q then %q", text, again)
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add("cpu=4,mem=8g,cuda.shares=0.5", "cuda.device", int64(1_000_000))
	f.Add("mem=512", "cuda.mem", int64(1536<<20))
	f.Add("", "cpu", int64(0))
	f.Add("cpu=1,,mem=1.5g ,", "x", int64(9223372036854775807))
	f.Add("cpu=1,cpu=2", "mem", int64(100))
	f.Fuzz(func(t *testing.T, list, key string, q int64) {
		s, err := ParseList([]string{list})
		if err != nil {
			checkSentinel(t, err)
			s = Set{}
		}
		if _, err := ParseValue(key, "0"); err == nil && q >= 0 {
			if _, dup := s[key]; !dup {
				s[key] = Quantity(q)
			}
		}

		fromMap, err := ParseMap(s.Map())
		if err != nil || !fromMap.Equal(s) || len(fromMap) != len(s) {
			t.Fatalf("ParseMap(%v) = %v, %v; want %v", s.Map(), fromMap, err, s)
		}
		text := s.String()
		fromList, err := ParseList(strings.Split(text, ","))
		if err != nil || !fromList.Equal(s) || len(fromList) != len(s) {
			t.Fatalf("ParseList(%q) = %v, %v; want %v", text, fromList, err, s)
		}
		if again := fromList.String(); again != text {
			t.Fatalf("String not canonical: %q then %q", text, again)
		}

		sum, err := s.Add(s)
		if err != nil {
			checkSentinel(t, err)
			if !errors.Is(err, ErrOverflow) {
				t.Fatalf("Add: %v, want overflow", err)
			}
			return
		}
		if !s.Fits(sum) {
			t.Fatalf("%v does not fit %v", s, sum)
		}
		diff, err := sum.Sub(s)
		if err != nil || !diff.Equal(s) {
			t.Fatalf("(%v + itself) - itself = %v, %v", s, diff, err)
		}
		if zero, err := s.Sub(s); err != nil || !zero.IsZero() {
			t.Fatalf("%v - itself = %v, %v", s, zero, err)
		}
	})
}
