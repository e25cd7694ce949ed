//! Host-side helpers of the CUDA backend, independent of a device so they are tested on any
//! machine: launch geometry, hash table sizing, group numbering, sort padding, dictionary
//! encoding of utf8 columns and exact assembly of int64 sums.

use std::collections::HashMap;

use arrow::array::{Array, StringArray};

use crate::error::FrameError;

/// Threads per block of the grid-stride kernels.
pub(crate) const BLOCK: u32 = 256;
/// Threads per block of the filter kernels (one row per thread; `FILTER_BLOCK` in filter.cu).
pub(crate) const FILTER_BLOCK: u32 = 256;
/// Enough blocks to fill a large GPU several times over; grid-stride loops cover the rest.
const MAX_GRID: u32 = 65_535;
/// Row index meaning "no row": gathers a null (`NO_ROW` in the kernels).
pub(crate) const NO_ROW: u32 = u32::MAX;
/// Rows one frame may hold on the device: row indices are `u32` and the hash table has twice
/// as many slots as rows, rounded up to a power of two.
pub(crate) const MAX_DEVICE_ROWS: usize = 1 << 30;
/// Shared memory a low-cardinality aggregation may use per block (the portable default limit).
pub(crate) const SHARED_BYTES: usize = 48 * 1024;

/// (blocks, threads) of a grid-stride launch over `n` items; at least one block.
pub(crate) fn grid(n: usize) -> (u32, u32) {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_GRID as usize) as u32;
    (blocks, BLOCK)
}

/// Blocks of the filter kernels, which use exactly one thread per row.
pub(crate) fn filter_blocks(n: usize) -> u32 {
    n.div_ceil(FILTER_BLOCK as usize).max(1) as u32
}

/// Rows as the kernels' `unsigned int`, refusing frames too large for the device layout.
pub(crate) fn device_rows(n: usize) -> Result<u32, FrameError> {
    if n > MAX_DEVICE_ROWS {
        return Err(FrameError::Limit(format!("{n} rows do not fit a GPU frame (at most {MAX_DEVICE_ROWS})")));
    }
    Ok(n as u32)
}

/// Slots of the group-by hash table for `rows` rows: a power of two at least twice the rows
/// (so probing stays short at any cardinality), at least 1024.
pub(crate) fn hash_capacity(rows: usize) -> u32 {
    (rows.max(1) * 2).next_power_of_two().max(1024) as u32
}

/// Whether `groups` partial aggregates of `words` 8-byte words each fit in shared memory.
pub(crate) fn fits_shared(groups: usize, words: usize) -> bool {
    groups > 0 && groups * words * 8 <= SHARED_BYTES
}

/// Numbers the used hash slots by their first row: dense group ids in order of first
/// appearance, as the CPU backend numbers them. Returns the slot -> group map (unused slots map
/// to `NO_ROW`) and each group's first row.
pub(crate) fn number_groups(first_row_of_slot: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let mut used: Vec<(u32, u32)> = first_row_of_slot
        .iter()
        .enumerate()
        .filter(|(_, first)| **first != NO_ROW)
        .map(|(slot, first)| (*first, slot as u32))
        .collect();
    used.sort_unstable();
    let mut slot_to_group = vec![NO_ROW; first_row_of_slot.len()];
    let mut firsts = Vec::with_capacity(used.len());
    for (group, (first, slot)) in used.into_iter().enumerate() {
        slot_to_group[slot as usize] = group as u32;
        firsts.push(first);
    }
    (slot_to_group, firsts)
}

/// The power-of-two length the bitonic sort runs over, and its (j, k) steps in launch order.
pub(crate) fn bitonic_schedule(n: usize) -> (u32, Vec<(u32, u32)>) {
    let padded = n.max(1).next_power_of_two() as u32;
    let mut steps = Vec::new();
    let mut k = 2u32;
    while k <= padded {
        let mut j = k / 2;
        while j > 0 {
            steps.push((j, k));
            j /= 2;
        }
        k *= 2;
    }
    (padded, steps)
}

/// An int64 group sum from the kernels' 32-bit halves (`hi * 2^32 + lo`, each summed with
/// wrapping u64 atomics), or `None` when the exact sum does not fit int64.
pub(crate) fn int_sum(lo: u64, hi: u64) -> Option<i64> {
    let exact = ((hi as i64 as i128) << 32) + lo as i128;
    i64::try_from(exact).ok()
}

/// A utf8 column as codes into a sorted dictionary of its distinct values, so that comparing
/// codes compares strings (min/max/sort and `<` run on codes on the device).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Encoded {
    pub codes: Vec<u64>,
    /// One byte per row, `None` without nulls.
    pub validity: Option<Vec<u8>>,
    pub dictionary: StringArray,
}

pub(crate) fn encode_utf8(column: &StringArray) -> Encoded {
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut distinct: Vec<&str> = Vec::new();
    let mut raw = Vec::with_capacity(column.len());
    for i in 0..column.len() {
        if column.is_null(i) {
            raw.push(NO_ROW);
            continue;
        }
        let s = column.value(i);
        let next = distinct.len() as u32;
        let id = *ids.entry(s).or_insert_with(|| {
            distinct.push(s);
            next
        });
        raw.push(id);
    }
    let mut order: Vec<u32> = (0..distinct.len() as u32).collect();
    order.sort_unstable_by(|a, b| distinct[*a as usize].cmp(distinct[*b as usize]));
    let mut rank = vec![0u64; distinct.len()];
    for (position, id) in order.iter().enumerate() {
        rank[*id as usize] = position as u64;
    }
    let codes = raw.iter().map(|id| if *id == NO_ROW { 0 } else { rank[*id as usize] }).collect();
    let validity = (column.null_count() > 0).then(|| (0..column.len()).map(|i| column.is_valid(i) as u8).collect());
    let dictionary = StringArray::from_iter_values(order.iter().map(|id| distinct[*id as usize]));
    Encoded { codes, validity, dictionary }
}

/// One sorted dictionary holding the values of all of `dictionaries`, and for each input the
/// map from its codes to codes of the merged one (concat of utf8 columns).
pub(crate) fn merge_dictionaries(dictionaries: &[&StringArray]) -> (StringArray, Vec<Vec<u64>>) {
    let mut all: Vec<&str> = dictionaries.iter().flat_map(|d| d.iter().flatten()).collect();
    all.sort_unstable();
    all.dedup();
    let position: HashMap<&str, u64> = all.iter().enumerate().map(|(i, s)| (*s, i as u64)).collect();
    let mappings = dictionaries.iter().map(|d| d.iter().flatten().map(|s| position[s]).collect()).collect();
    (StringArray::from_iter_values(all), mappings)
}

/// Where `literal` falls in a sorted dictionary: the first code not below it, the first code
/// above it, and its own code if present. `s < lit` iff `code < lower`, `s <= lit` iff
/// `code < upper`, and so on.
pub(crate) fn dictionary_bounds(dictionary: &StringArray, literal: &str) -> (u64, u64, Option<u64>) {
    let values: Vec<&str> = dictionary.iter().flatten().collect();
    let lower = values.partition_point(|v| *v < literal) as u64;
    let upper = values.partition_point(|v| *v <= literal) as u64;
    (lower, upper, (upper > lower).then_some(lower))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers_and_caps() {
        assert_eq!(grid(0), (1, BLOCK));
        assert_eq!(grid(1), (1, BLOCK));
        assert_eq!(grid(257), (2, BLOCK));
        assert_eq!(grid(1 << 40).0, MAX_GRID);
        assert_eq!(filter_blocks(0), 1);
        assert_eq!(filter_blocks(513), 3);
        assert!(device_rows(MAX_DEVICE_ROWS + 1).unwrap_err().to_string().contains("do not fit a GPU frame"));
        assert_eq!(device_rows(5).unwrap(), 5);
    }

    #[test]
    fn hash_capacity_is_power_of_two_with_headroom() {
        assert_eq!(hash_capacity(0), 1024);
        assert_eq!(hash_capacity(1000), 2048);
        assert_eq!(hash_capacity(1_000_000), 1 << 21);
        let c = hash_capacity(MAX_DEVICE_ROWS);
        assert!(c.is_power_of_two() && c as usize >= 2 * MAX_DEVICE_ROWS);
    }

    #[test]
    fn shared_memory_choice() {
        assert!(fits_shared(100, 3));
        assert!(fits_shared(2048, 3));
        assert!(!fits_shared(2049, 3));
        assert!(!fits_shared(0, 1));
    }

    #[test]
    fn groups_numbered_by_first_appearance() {
        let firsts = [NO_ROW, 7, NO_ROW, 0, 3, NO_ROW];
        let (slot_to_group, group_firsts) = number_groups(&firsts);
        assert_eq!(group_firsts, [0, 3, 7]);
        assert_eq!(slot_to_group, [NO_ROW, 2, NO_ROW, 0, 1, NO_ROW]);
        assert_eq!(number_groups(&[NO_ROW; 4]).1, Vec::<u32>::new());
    }

    #[test]
    fn bitonic_schedule_sorts() {
        for n in [0usize, 1, 2, 3, 5, 8, 13, 64, 100] {
            let (padded, steps) = bitonic_schedule(n);
            assert!(padded.is_power_of_two() && padded as usize >= n.max(1));
            // Run the schedule on the host exactly as `bitonic_step` does on the device.
            let mut v: Vec<u64> = (0..padded as u64).map(|i| (i * 7919 + 13) % 101).collect();
            for (j, k) in steps {
                for i in 0..padded {
                    let l = i ^ j;
                    if l > i {
                        let ascending = i & k == 0;
                        let (a, b) = (v[i as usize], v[l as usize]);
                        if (ascending && b < a) || (!ascending && a < b) {
                            v.swap(i as usize, l as usize);
                        }
                    }
                }
            }
            assert!(v.windows(2).all(|w| w[0] <= w[1]), "n = {n}: {v:?}");
        }
    }

    #[test]
    fn int_sums_assemble_exactly_and_detect_overflow() {
        let split = |vals: &[i64]| {
            let lo: u64 = vals.iter().fold(0u64, |acc, v| acc.wrapping_add(*v as u64 & 0xFFFF_FFFF));
            let hi: u64 = vals.iter().fold(0u64, |acc, v| acc.wrapping_add((*v >> 32) as u64));
            (lo, hi)
        };
        for vals in [vec![1i64, 2, 3], vec![-5, 3], vec![i64::MAX, -1], vec![i64::MIN, 7], vec![-(1 << 40), 1 << 35, -3]] {
            let (lo, hi) = split(&vals);
            assert_eq!(int_sum(lo, hi), Some(vals.iter().sum::<i64>()), "{vals:?}");
        }
        let (lo, hi) = split(&[i64::MAX, 1]);
        assert_eq!(int_sum(lo, hi), None);
        let (lo, hi) = split(&[i64::MIN, -1]);
        assert_eq!(int_sum(lo, hi), None);
    }

    #[test]
    fn dictionary_codes_follow_string_order() {
        let column = StringArray::from(vec![Some("pear"), None, Some("apple"), Some("pear"), Some("fig")]);
        let e = encode_utf8(&column);
        assert_eq!(e.dictionary.iter().flatten().collect::<Vec<_>>(), ["apple", "fig", "pear"]);
        assert_eq!(e.codes, [2, 0, 0, 2, 1]);
        assert_eq!(e.validity, Some(vec![1, 0, 1, 1, 1]));
        let e = encode_utf8(&StringArray::from(vec!["b", "a"]));
        assert_eq!((e.codes, e.validity), (vec![1, 0], None));
    }

    #[test]
    fn dictionaries_merge_with_code_maps() {
        let a = StringArray::from(vec!["b", "d"]);
        let b = StringArray::from(vec!["a", "b", "c"]);
        let (merged, maps) = merge_dictionaries(&[&a, &b]);
        assert_eq!(merged.iter().flatten().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        assert_eq!(maps, [vec![1, 3], vec![0, 1, 2]]);
    }

    #[test]
    fn literal_bounds_in_dictionary() {
        let d = StringArray::from(vec!["apple", "fig", "pear"]);
        assert_eq!(dictionary_bounds(&d, "fig"), (1, 2, Some(1)));
        assert_eq!(dictionary_bounds(&d, "grape"), (2, 2, None));
        assert_eq!(dictionary_bounds(&d, "a"), (0, 0, None));
        assert_eq!(dictionary_bounds(&d, "zz"), (3, 3, None));
    }
}
