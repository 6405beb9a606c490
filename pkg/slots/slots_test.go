package slots

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestIsBytes(t *testing.T) {
	for key, want := range map[string]bool{
		"mem":         true,
		"cuda.mem":    true,
		"rocm.mem":    true,
		"cpu":         false,
		"cuda.shares": false,
		"cuda.device": false,
		"memory":      false,
		"shmem":       false,
		"cuda-mem":    false,
	} {
		if got := IsBytes(key); got != want {
			t.Errorf("IsBytes(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestParseValue(t *testing.T) {
	const (
		k = 1 << 10
		m = 1 << 20
		g = 1 << 30
	)
	tests := []struct {
		name, key, value string
		want             Quantity
	}{
		{"cpu=4", "cpu", "4", 4 * Scale},
		{"cpu=0", "cpu", "0", 0},
		{"cpu=0.25", "cpu", "0.25", 250_000},
		{"cpu=.5", "cpu", ".5", 500_000},
		{"cpu=2.", "cpu", "2.", 2 * Scale},
		{"cpu=leading zeros", "cpu", "0004", 4 * Scale},
		{"cpu=max", "cpu", "9223372036854.775807", math.MaxInt64},
		{"cuda.shares=0.5", "cuda.shares", "0.5", 500_000},
		{"cuda.shares=micro", "cuda.shares", "0.000001", 1},
		{"cuda.shares=trailing zeros past 6", "cuda.shares", "0.500000000", 500_000},
		{"cuda.device=1", "cuda.device", "1", Scale},
		{"mem=8g", "mem", "8g", 8 * g},
		{"mem=8G", "mem", "8G", 8 * g},
		{"mem=8gib", "mem", "8gib", 8 * g},
		{"mem=8GiB", "mem", "8GiB", 8 * g},
		{"mem=8gb", "mem", "8gb", 8 * g},
		{"mem=8Gi", "mem", "8Gi", 8 * g},
		{"mem=512 is MiB", "mem", "512", 512 * m},
		{"mem=0.5 is MiB", "mem", "0.5", 512 * k},
		{"mem=0", "mem", "0", 0},
		{"mem=1.5g", "mem", "1.5g", 1610612736},
		{"mem=100b", "mem", "100b", 100},
		{"mem=100B", "mem", "100B", 100},
		{"mem=1k", "mem", "1k", k},
		{"mem=1536m", "mem", "1536m", 1536 * m},
		{"mem=2t", "mem", "2t", 2 << 40},
		{"mem=3p", "mem", "3p", 3 << 50},
		{"mem=7e", "mem", "7e", 7 << 60},
		{"mem=7.5e", "mem", "7.5e", 15 << 59},
		{"mem=max bytes", "mem", "9223372036854775807b", math.MaxInt64},
		{"mem=just under 8e", "mem", "7.999999999999999999133e", math.MaxInt64},
		{"mem=fraction truncated", "mem", "1.0000001k", k},
		{"mem=half byte truncated", "mem", "0.5b", 0},
		{"mem=fraction of k", "mem", "0.333k", 340}, // 340.992
		{"mem=long fraction", "mem", "0." + strings.Repeat("9", 100) + "k", k - 1},
		{"cuda.mem=2g", "cuda.mem", "2g", 2 * g},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseValue(tt.key, tt.value)
			if err != nil {
				t.Fatalf("ParseValue(%q, %q): %v", tt.key, tt.value, err)
			}
			if got != tt.want {
				t.Fatalf("ParseValue(%q, %q) = %d, want %d", tt.key, tt.value, got, tt.want)
			}
		})
	}
}

func TestParseValueErrors(t *testing.T) {
	tests := []struct {
		name, key, value string
		want             error
	}{
		{"empty value", "cpu", "", ErrSyntax},
		{"NaN", "cpu", "NaN", ErrSyntax},
		{"nan", "mem", "nan", ErrSyntax},
		{"Inf", "cpu", "Inf", ErrSyntax},
		{"+Inf", "cpu", "+Inf", ErrSyntax},
		{"-inf", "cpu", "-inf", ErrSyntax},
		{"infinity", "mem", "infinity", ErrSyntax},
		{"exponent", "cpu", "1e6", ErrSyntax},
		{"byte exponent", "mem", "1e6", ErrSyntax},
		{"plus sign", "cpu", "+4", ErrSyntax},
		{"dot only", "cpu", ".", ErrSyntax},
		{"two dots", "cpu", "1.2.3", ErrSyntax},
		{"space inside", "mem", "8 g", ErrSyntax},
		{"space around", "cpu", " 4", ErrSyntax},
		{"letters only", "cpu", "abc", ErrSyntax},
		{"suffix only", "mem", "g", ErrSyntax},
		{"hex", "cpu", "0x10", ErrSyntax},
		{"comma", "cpu", "1,5", ErrSyntax},
		{"minus alone", "cpu", "-", ErrSyntax},
		{"negative", "cpu", "-1", ErrNegative},
		{"negative fraction", "cpu", "-.5", ErrNegative},
		{"negative zero", "cpu", "-0", ErrNegative},
		{"negative bytes", "mem", "-8g", ErrNegative},
		{"unknown suffix", "mem", "8x", ErrUnknownSuffix},
		{"bad second letter", "mem", "8gx", ErrUnknownSuffix},
		{"i alone", "mem", "8i", ErrUnknownSuffix},
		{"bi", "mem", "8bi", ErrUnknownSuffix},
		{"suffix on cpu", "cpu", "4k", ErrUnknownSuffix},
		{"suffix on shares", "cuda.shares", "0.5g", ErrUnknownSuffix},
		{"precision", "cpu", "0.0000001", ErrPrecision},
		{"precision late digit", "cuda.shares", "0.5000001", ErrPrecision},
		{"cpu overflow", "cpu", "9223372036854.775808", ErrOverflow},
		{"cpu overflow whole", "cpu", "9223372036855", ErrOverflow},
		{"cpu huge", "cpu", strings.Repeat("9", 40), ErrOverflow},
		{"mem 8e", "mem", "8e", ErrOverflow},
		{"mem 9e", "mem", "9e", ErrOverflow},
		{"mem bytes overflow", "mem", "9223372036854775808b", ErrOverflow},
		{"mem MiB overflow", "mem", "8796093022208", ErrOverflow},
		{"mem huge", "mem", strings.Repeat("9", 40) + "k", ErrOverflow},
		{"empty key", "", "4", ErrEmptyKey},
		{"upper-case key", "CPU", "4", ErrInvalidKey},
		{"key starts with digit", "4cpu", "4", ErrInvalidKey},
		{"key starts with dot", ".mem", "4", ErrInvalidKey},
		{"key with space", "cpu ", "4", ErrInvalidKey},
		{"key with slash", "cuda/shares", "4", ErrInvalidKey},
		{"non-ASCII key", "cpü", "4", ErrInvalidKey},
		{"key too long", "c" + strings.Repeat("x", MaxKeyLen), "4", ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := ParseValue(tt.key, tt.value)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseValue(%q, %q) = %d, %v; want %v", tt.key, tt.value, q, err, tt.want)
			}
			if tt.key != "" && !strings.Contains(err.Error(), tt.key) {
				t.Errorf("error %q does not name key %q", err, tt.key)
			}
			if tt.want != ErrInvalidKey && tt.value != "" && !strings.Contains(err.Error(), tt.value) {
				t.Errorf("error %q does not name value %q", err, tt.value)
			}
		})
	}
}

func TestParseValueKeyLength(t *testing.T) {
	key := "c" + strings.Repeat("x", MaxKeyLen-1)
	if _, err := ParseValue(key, "1"); err != nil {
		t.Fatalf("key of %d characters: %v", len(key), err)
	}
}

func TestErrorMessage(t *testing.T) {
	_, err := ParseValue("mem", "8x")
	const want = `slot "mem": unknown size suffix "x" in "8x" (use k, m, g, t, p or e)`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

func TestParseOne(t *testing.T) {
	tests := []struct {
		name, kv string
		key      string
		want     Quantity
		err      error
	}{
		{name: "cpu=4", kv: "cpu=4", key: "cpu", want: 4 * Scale},
		{name: "mem=8g", kv: "mem=8g", key: "mem", want: 8 << 30},
		{name: "spaces", kv: " cuda.shares = 0.5 ", key: "cuda.shares", want: 500_000},
		{name: "no equals", kv: "cpu", err: ErrSyntax},
		{name: "empty", kv: "", err: ErrSyntax},
		{name: "empty value", kv: "cpu=", err: ErrSyntax},
		{name: "two equals", kv: "cpu=4=5", err: ErrSyntax},
		{name: "empty key", kv: "=4", err: ErrEmptyKey},
		{name: "invalid key", kv: "Cpu=4", err: ErrInvalidKey},
		{name: "negative", kv: "cpu=-4", err: ErrNegative},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, q, err := ParseOne(tt.kv)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ParseOne(%q) = %q, %d, %v; want %v", tt.kv, key, q, err, tt.err)
				}
				return
			}
			if err != nil || key != tt.key || q != tt.want {
				t.Fatalf("ParseOne(%q) = %q, %d, %v; want %q, %d", tt.kv, key, q, err, tt.key, tt.want)
			}
		})
	}
}

func TestParseList(t *testing.T) {
	tests := []struct {
		name string
		kvs  []string
		want Set
		err  error
	}{
		{name: "none", kvs: nil, want: Set{}},
		{name: "empty item", kvs: []string{""}, want: Set{}},
		{name: "flags", kvs: []string{"cpu=4", "mem=8g", "cuda.shares=0.5"},
			want: Set{"cpu": 4 * Scale, "mem": 8 << 30, "cuda.shares": 500_000}},
		{name: "commas", kvs: []string{"cpu=1,mem=2g", "cuda.device=1"},
			want: Set{"cpu": Scale, "mem": 2 << 30, "cuda.device": Scale}},
		{name: "spaces and trailing comma", kvs: []string{"cpu=1, mem=512,"},
			want: Set{"cpu": Scale, "mem": 512 << 20}},
		{name: "zero kept", kvs: []string{"cpu=0"}, want: Set{"cpu": 0}},
		{name: "duplicate", kvs: []string{"cpu=1", "cpu=2"}, err: ErrDuplicateKey},
		{name: "duplicate in one item", kvs: []string{"cpu=1,cpu=1"}, err: ErrDuplicateKey},
		{name: "bad entry", kvs: []string{"cpu=1,mem=8x"}, err: ErrUnknownSuffix},
		{name: "no equals", kvs: []string{"cpu=1,mem"}, err: ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseList(tt.kvs)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ParseList(%q) = %v, %v; want %v", tt.kvs, got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseList(%q): %v", tt.kvs, err)
			}
			if got == nil || len(got) != len(tt.want) || !got.Equal(tt.want) {
				t.Fatalf("ParseList(%q) = %v, want %v", tt.kvs, got, tt.want)
			}
		})
	}
}

func TestParseMap(t *testing.T) {
	got, err := ParseMap(map[string]string{"cpu": "4", "mem": "8g", "cuda.shares": "0.5"})
	if err != nil {
		t.Fatal(err)
	}
	want := Set{"cpu": 4 * Scale, "mem": 8 << 30, "cuda.shares": 500_000}
	if !got.Equal(want) {
		t.Fatalf("got %v, want %v", got, want)
	}

	// The first bad key in sorted order is reported, every time.
	bad := map[string]string{"cpu": "x", "mem": "-1", "a": "1", "": "2"}
	for range 10 {
		_, err := ParseMap(bad)
		if !errors.Is(err, ErrEmptyKey) {
			t.Fatalf("got %v, want %v", err, ErrEmptyKey)
		}
	}
	delete(bad, "")
	if _, err := ParseMap(bad); !errors.Is(err, ErrSyntax) {
		t.Fatalf("got %v, want %v", err, ErrSyntax)
	}
}

func TestFormatValue(t *testing.T) {
	tests := []struct {
		name, key string
		q         Quantity
		want      string
	}{
		{"cpu=4", "cpu", 4 * Scale, "4"},
		{"cpu=0", "cpu", 0, "0"},
		{"cuda.shares=0.5", "cuda.shares", 500_000, "0.5"},
		{"micro", "cuda.shares", 1, "0.000001"},
		{"mixed", "cpu", 12_340_500, "12.3405"},
		{"cpu max", "cpu", math.MaxInt64, "9223372036854.775807"},
		{"cpu negative", "cpu", -1_500_000, "-1.5"},
		{"cpu min", "cpu", math.MinInt64, "-9223372036854.775808"},
		{"mem=8g", "mem", 8 << 30, "8g"},
		{"mem=1.5g", "mem", 1610612736, "1536m"},
		{"mem=512m", "mem", 512 << 20, "512m"},
		{"mem=1k", "mem", 1 << 10, "1k"},
		{"mem=1025k", "mem", 1025 << 10, "1025k"},
		{"mem=2t", "mem", 2 << 40, "2t"},
		{"mem=3p", "mem", 3 << 50, "3p"},
		{"mem=7e", "mem", 7 << 60, "7e"},
		{"mem=100b", "mem", 100, "100b"},
		{"mem=1b", "mem", 1, "1b"},
		{"mem=0", "mem", 0, "0"},
		{"mem max", "mem", math.MaxInt64, "9223372036854775807b"},
		{"mem min", "mem", math.MinInt64, "-8e"},
		{"cuda.mem", "cuda.mem", 16 << 30, "16g"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := FormatValue(tt.key, tt.q)
			if got != tt.want {
				t.Fatalf("FormatValue(%q, %d) = %q, want %q", tt.key, tt.q, got, tt.want)
			}
			if tt.q < 0 {
				return
			}
			back, err := ParseValue(tt.key, got)
			if err != nil || back != tt.q {
				t.Fatalf("ParseValue(%q, %q) = %d, %v; want %d", tt.key, got, back, err, tt.q)
			}
		})
	}
}

func TestSetStringAndMap(t *testing.T) {
	s := Set{"mem": 8 << 30, "cpu": 4 * Scale, "cuda.shares": 500_000, "cuda.device": 0}
	const want = "cpu=4,cuda.device=0,cuda.shares=0.5,mem=8g"
	if got := s.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	m := s.Map()
	if len(m) != 4 || m["mem"] != "8g" || m["cpu"] != "4" || m["cuda.shares"] != "0.5" || m["cuda.device"] != "0" {
		t.Fatalf("Map() = %v", m)
	}
	if got := (Set{}).String(); got != "" {
		t.Fatalf("empty String() = %q", got)
	}
	if got := Set(nil).Map(); got == nil || len(got) != 0 {
		t.Fatalf("nil Map() = %v", got)
	}
}

func TestRoundTrip(t *testing.T) {
	sets := map[string]Set{
		"empty":   {},
		"nil":     nil,
		"example": {"cpu": 4 * Scale, "mem": 8 << 30, "cuda.shares": 500_000, "cuda.device": Scale},
		"odd":     {"mem": 1610612737, "cuda.mem": 1, "cpu": 1, "x_y-z.0": 123_456_789},
		"extreme": {"mem": math.MaxInt64, "cpu": math.MaxInt64, "zero": 0},
	}
	for name, s := range sets {
		t.Run(name, func(t *testing.T) {
			fromMap, err := ParseMap(s.Map())
			if err != nil || !fromMap.Equal(s) || len(fromMap) != len(s) {
				t.Errorf("ParseMap(%v) = %v, %v; want %v", s.Map(), fromMap, err, s)
			}
			fromList, err := ParseList(strings.Split(s.String(), ","))
			if err != nil || !fromList.Equal(s) || len(fromList) != len(s) {
				t.Errorf("ParseList(%q) = %v, %v; want %v", s.String(), fromList, err, s)
			}
		})
	}
}

func TestClone(t *testing.T) {
	s := Set{"cpu": Scale}
	c := s.Clone()
	c["cpu"] = 2 * Scale
	c["mem"] = 1
	if s["cpu"] != Scale || len(s) != 1 {
		t.Fatalf("Clone shares storage: %v", s)
	}
	if n := Set(nil).Clone(); n == nil {
		t.Fatal("Clone of nil is nil")
	}
}

func TestAdd(t *testing.T) {
	tests := []struct {
		name    string
		s, o    Set
		want    Set
		wantErr error
	}{
		{name: "disjoint", s: Set{"cpu": Scale}, o: Set{"mem": 1 << 30},
			want: Set{"cpu": Scale, "mem": 1 << 30}},
		{name: "overlap", s: Set{"cpu": Scale, "mem": 1 << 30}, o: Set{"cpu": 500_000},
			want: Set{"cpu": 1_500_000, "mem": 1 << 30}},
		{name: "nil", s: nil, o: nil, want: Set{}},
		{name: "to max", s: Set{"cpu": math.MaxInt64 - 1}, o: Set{"cpu": 1},
			want: Set{"cpu": math.MaxInt64}},
		{name: "overflow", s: Set{"cpu": math.MaxInt64}, o: Set{"cpu": 1}, wantErr: ErrOverflow},
		{name: "negative overflow", s: Set{"cpu": math.MinInt64}, o: Set{"cpu": -1}, wantErr: ErrOverflow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.s.Clone()
			got, err := tt.s.Add(tt.o)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Add = %v, %v; want error %v", got, err, tt.wantErr)
			}
			if tt.wantErr == nil && (got == nil || !got.Equal(tt.want)) {
				t.Fatalf("Add = %v, want %v", got, tt.want)
			}
			if !tt.s.Equal(before) {
				t.Fatalf("Add changed its receiver to %v", tt.s)
			}
		})
	}
}

func TestAddOverflowReportsFirstKey(t *testing.T) {
	s := Set{"a": math.MaxInt64, "b": math.MaxInt64, "c": math.MaxInt64}
	for range 10 {
		_, err := s.Add(s)
		if err == nil || !strings.HasPrefix(err.Error(), `slot "a": `) {
			t.Fatalf("got %v, want an error about slot a", err)
		}
	}
}

func TestSub(t *testing.T) {
	tests := []struct {
		name    string
		s, o    Set
		want    Set
		wantErr error
	}{
		{name: "partial", s: Set{"cpu": 4 * Scale, "mem": 8 << 30}, o: Set{"cpu": Scale},
			want: Set{"cpu": 3 * Scale, "mem": 8 << 30}},
		{name: "to zero", s: Set{"cpu": Scale}, o: Set{"cpu": Scale}, want: Set{}},
		{name: "zero of missing", s: Set{"cpu": Scale}, o: Set{"mem": 0}, want: Set{"cpu": Scale}},
		{name: "negative", s: Set{"cpu": Scale}, o: Set{"cpu": 2 * Scale}, wantErr: ErrNegative},
		{name: "missing key", s: Set{"cpu": Scale}, o: Set{"mem": 1}, wantErr: ErrNegative},
		{name: "overflow", s: Set{"cpu": math.MaxInt64}, o: Set{"cpu": -1}, wantErr: ErrOverflow},
		{name: "min overflow", s: Set{"cpu": 0}, o: Set{"cpu": math.MinInt64}, wantErr: ErrOverflow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.s.Clone()
			got, err := tt.s.Sub(tt.o)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Sub = %v, %v; want error %v", got, err, tt.wantErr)
			}
			if tt.wantErr == nil && (got == nil || !got.Equal(tt.want)) {
				t.Fatalf("Sub = %v, want %v", got, tt.want)
			}
			if !tt.s.Equal(before) {
				t.Fatalf("Sub changed its receiver to %v", tt.s)
			}
		})
	}
}

func TestSubErrorMessage(t *testing.T) {
	_, err := Set{"cpu": Scale}.Sub(Set{"cpu": 2 * Scale})
	const want = `slot "cpu": negative quantity: 1 - 2`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

func TestFits(t *testing.T) {
	capacity := Set{"cpu": 4 * Scale, "mem": 8 << 30, "cuda.shares": Scale}
	tests := []struct {
		name string
		s    Set
		want bool
	}{
		{"empty", Set{}, true},
		{"nil", nil, true},
		{"exact", capacity, true},
		{"less", Set{"cpu": Scale, "mem": 1 << 30}, true},
		{"zero of missing key", Set{"cpu": Scale, "tpu.device": 0}, true},
		{"negative of missing key", Set{"tpu.device": -1}, true},
		{"too much cpu", Set{"cpu": 4*Scale + 1}, false},
		{"too much mem", Set{"mem": 8<<30 + 1}, false},
		{"missing key", Set{"cuda.device": 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.Fits(capacity); got != tt.want {
				t.Fatalf("%v.Fits(%v) = %v, want %v", tt.s, capacity, got, tt.want)
			}
		})
	}
	if !(Set{"cpu": 0}).Fits(nil) {
		t.Error("zero set does not fit nil capacity")
	}
}

func TestEqualAndIsZero(t *testing.T) {
	tests := []struct {
		name      string
		s, o      Set
		equal     bool
		sZero     bool
		oZeroWant bool
	}{
		{"both nil", nil, nil, true, true, true},
		{"nil and zero keys", nil, Set{"cpu": 0, "mem": 0}, true, true, true},
		{"same", Set{"cpu": 1}, Set{"cpu": 1}, true, false, false},
		{"zero key ignored", Set{"cpu": 1, "mem": 0}, Set{"cpu": 1}, true, false, false},
		{"different value", Set{"cpu": 1}, Set{"cpu": 2}, false, false, false},
		{"extra key", Set{"cpu": 1}, Set{"cpu": 1, "mem": 1}, false, false, false},
		{"disjoint", Set{"cpu": 1}, Set{"mem": 1}, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.Equal(tt.o); got != tt.equal {
				t.Errorf("%v.Equal(%v) = %v", tt.s, tt.o, got)
			}
			if got := tt.o.Equal(tt.s); got != tt.equal {
				t.Errorf("%v.Equal(%v) = %v", tt.o, tt.s, got)
			}
			if got := tt.s.IsZero(); got != tt.sZero {
				t.Errorf("%v.IsZero() = %v", tt.s, got)
			}
			if got := tt.o.IsZero(); got != tt.oZeroWant {
				t.Errorf("%v.IsZero() = %v", tt.o, got)
			}
		})
	}
}

func TestNoDrift(t *testing.T) {
	tenth, err := ParseList([]string{"cuda.shares=0.1"})
	if err != nil {
		t.Fatal(err)
	}
	sum := Set{}
	for range 10 {
		if sum, err = sum.Add(tenth); err != nil {
			t.Fatal(err)
		}
	}
	one, _ := ParseList([]string{"cuda.shares=1"})
	if !sum.Equal(one) || sum.String() != "cuda.shares=1" {
		t.Fatalf("ten times 0.1 = %v, want 1", sum)
	}
	for range 10 {
		if sum, err = sum.Sub(tenth); err != nil {
			t.Fatal(err)
		}
	}
	if !sum.IsZero() {
		t.Fatalf("1 - ten times 0.1 = %v, want zero", sum)
	}

	// 0.1 + 0.2 is 0.3, unlike in float64.
	a, _ := ParseList([]string{"cpu=0.1"})
	b, _ := ParseList([]string{"cpu=0.2"})
	c, _ := a.Add(b)
	if got := c.String(); got != "cpu=0.3" {
		t.Fatalf("0.1 + 0.2 = %s", got)
	}
}
