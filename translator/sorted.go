package translator

import "sort"

// patchSorted returns a new list sorted by name: list (sorted, names
// unique) with every named item in edits removed, then the non-nil edits
// inserted. It copies list once and searches for each edit, so a few edits
// cost O(len(list)) pointer copies; the old list is left as it was.
func patchSorted[T any](list []T, edits map[string]T, name func(T) string) []T {
	var drop []int
	var add []T
	for n, v := range edits {
		i := sort.Search(len(list), func(i int) bool { return name(list[i]) >= n })
		if i < len(list) && name(list[i]) == n {
			drop = append(drop, i)
		}
		if any(v) != any(*new(T)) {
			add = append(add, v)
		}
	}
	sort.Ints(drop)
	sort.Slice(add, func(i, j int) bool { return name(add[i]) < name(add[j]) })
	out := make([]T, 0, len(list)-len(drop)+len(add))
	a := 0
	// emit copies list[from:to], slotting in the adds that sort before
	// its items.
	emit := func(from, to int) {
		for from < to && a < len(add) {
			n := name(add[a])
			j := from + sort.Search(to-from, func(k int) bool { return name(list[from+k]) > n })
			out = append(out, list[from:j]...)
			if j == to {
				return
			}
			out = append(out, add[a])
			a++
			from = j
		}
		out = append(out, list[from:to]...)
	}
	prev := 0
	for _, d := range drop {
		emit(prev, d)
		prev = d + 1
	}
	emit(prev, len(list))
	return append(out, add[a:]...)
}
