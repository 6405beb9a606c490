package slots_test

import (
	"fmt"

	"github.com/bai-sh/bai/pkg/slots"
)

func ExampleParseList() {
	s, err := slots.ParseList([]string{"cpu=4", "mem=1.5g,cuda.shares=0.5"})
	if err != nil {
		panic(err)
	}
	fmt.Println(s)
	fmt.Println(s["cpu"], s["mem"], s["cuda.shares"])
	// Output:
	// cpu=4,cuda.shares=0.5,mem=1536m
	// 4000000 1610612736 500000
}

func ExampleParseValue() {
	_, err := slots.ParseValue("mem", "8x")
	fmt.Println(err)
	// Output:
	// slot "mem": unknown size suffix "x" in "8x" (use k, m, g, t, p or e)
}

func ExampleSet_Fits() {
	capacity, _ := slots.ParseList([]string{"cpu=8,mem=32g,cuda.shares=1"})
	used, _ := slots.ParseList([]string{"cpu=6,mem=24g,cuda.shares=0.5"})
	free, _ := capacity.Sub(used)
	want, _ := slots.ParseList([]string{"cpu=4,mem=4g"})
	fmt.Println(free)
	fmt.Println(want.Fits(free))
	// Output:
	// cpu=2,cuda.shares=0.5,mem=8g
	// false
}
