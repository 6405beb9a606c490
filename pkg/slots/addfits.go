package slots

// AddFits reports whether s + o fits capacity, as
//
//	sum, err := s.Add(o); err == nil && sum.Fits(capacity)
//
// does, without allocating: a sum that overflows does not fit.
func (s Set) AddFits(o, capacity Set) bool {
	for k, a := range s {
		b := o[k]
		sum := a + b
		if (b > 0 && sum < a) || (b < 0 && sum > a) {
			return false
		}
		if sum > 0 && sum > capacity[k] {
			return false
		}
	}
	for k, b := range o {
		if _, ok := s[k]; ok {
			continue
		}
		if b > 0 && b > capacity[k] {
			return false
		}
	}
	return true
}
