package retention_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/retention"
)

// The seed's Benji enforce job: at 06:00, keep the latest 7 of the daily
// 07:30 backups.
func ExampleParseBenji() {
	policy, err := retention.ParseBenji("latest7", time.UTC)
	if err != nil {
		panic(err)
	}
	var versions []retention.Item
	for day := 16; day <= 25; day++ {
		t := time.Date(2026, 11, day, 7, 30, 0, 0, time.UTC)
		versions = append(versions, retention.Item{Name: "V" + t.Format("0102"), Created: t})
	}
	now := time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)
	keep, destroy := policy.Apply(now, versions)
	fmt.Println("keep:", names(keep))
	fmt.Println("destroy:", names(destroy))
	// Output:
	// keep: V1125 V1124 V1123 V1122 V1121 V1120 V1119
	// destroy: V1118 V1117 V1116
}

// The seed's zrepl receiver grid over three days of snapshots taken every 10
// minutes: everything from the last hour, one per hour for a day, one per day
// after that.
func ExampleParseGrid() {
	policy, err := retention.ParseGrid("1x1h(keep=all) | 24x1h | 30x1d | 6x30d", "^zrepl_")
	if err != nil {
		panic(err)
	}
	newest := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	var snaps []retention.Item
	for age := time.Duration(0); age < 72*time.Hour; age += 10 * time.Minute {
		t := newest.Add(-age)
		snaps = append(snaps, retention.Item{Name: "zrepl_" + t.Format("20060102_150405_000"), Created: t})
	}
	kept := 0
	for _, d := range retention.Explain(policy, newest, snaps) {
		if !d.Keep {
			continue
		}
		kept++
		if strings.Contains(d.Reasons[0], "30x1d") {
			fmt.Println(d.Item.Name, "kept by", d.Reasons[0])
		}
	}
	fmt.Printf("kept %d of %d\n", kept, len(snaps))
	// Output:
	// zrepl_20261124_111000_000 kept by grid 30x1d (interval 26 of 61)
	// zrepl_20261123_121000_000 kept by grid 30x1d (interval 27 of 61)
	// kept 32 of 432
}

// The seed's zrepl sender pruning: keep the last 10 snapshots, and never one
// the receiver does not have yet (not_replicated, which only the caller can
// know).
func ExampleUnion() {
	replicatedUpTo := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	notReplicated := retention.Func("not_replicated", func(it retention.Item) bool {
		return it.Created.After(replicatedUpTo)
	})
	last10, err := retention.LastN(10, "^zrepl_")
	if err != nil {
		panic(err)
	}
	policy := retention.Union(notReplicated, last10)

	var snaps []retention.Item
	newest := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for i := range 15 {
		t := newest.Add(-time.Duration(i) * 10 * time.Minute)
		snaps = append(snaps, retention.Item{Name: "zrepl_" + t.Format("1504"), Created: t})
	}
	keep, destroy := policy.Apply(newest, snaps)
	fmt.Println(len(keep), "kept, oldest", keep[len(keep)-1].Name)
	fmt.Println("destroy:", names(destroy))
	// Output:
	// 12 kept, oldest zrepl_1010
	// destroy: zrepl_1000 zrepl_0950 zrepl_0940
}

func names(items []retention.Item) string {
	var s []string
	for _, it := range items {
		s = append(s, it.Name)
	}
	return strings.Join(s, " ")
}
