use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{RecordBatch, UInt64Array};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use proptest::prelude::*;

use super::*;
use crate::error::BadRow;
use crate::layout::NANOS_PER_SEC;
use crate::row::{ColumnError, Columns};

const HOUR: u64 = 3_600 * NANOS_PER_SEC;

/// A row with a key and an event time, and a payload that tells copies apart.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    key: u64,
    event_ns: u64,
    copy: u64,
}

impl LakeRow for Row {
    const TABLE: &'static str = "t";
    const KEY_COLUMNS: &'static [&'static str] = &["key"];
    type Key = u64;
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("key", DataType::UInt64, false),
            Field::new("event_ns", DataType::UInt64, false),
            Field::new("copy", DataType::UInt64, false),
        ]))
    }
    fn key(&self) -> u64 {
        self.key
    }
    fn partition_ns(&self) -> u64 {
        self.event_ns
    }
    fn check(&self) -> Result<(), BadRow> {
        Ok(())
    }
    fn to_batch(rows: &[&Self]) -> Result<RecordBatch, ArrowError> {
        let col = |f: fn(&Row) -> u64| Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| f(r)))) as _;
        RecordBatch::try_new(Self::schema(), vec![col(|r| r.key), col(|r| r.event_ns), col(|r| r.copy)])
    }
    fn keys(batch: &RecordBatch) -> Result<Vec<u64>, ColumnError> {
        Columns(batch).u64s("key")
    }
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>, ColumnError> {
        let c = Columns(batch);
        let (k, e, n) = (c.u64s("key")?, c.u64s("event_ns")?, c.u64s("copy")?);
        Ok((0..k.len()).map(|i| Row { key: k[i], event_ns: e[i], copy: n[i] }).collect())
    }
}

fn row(key: u64, event_ns: u64) -> Row {
    Row { key, event_ns, copy: 0 }
}

/// (partition hour, part, [(time, key)]) of planned files.
type Shape = Vec<(u8, u32, Vec<(u64, u64)>)>;

fn shape(parts: &[Planned<Row>]) -> Shape {
    parts.iter().map(|p| (p.partition.hour, p.part, p.rows.iter().map(|(t, r)| (*t, r.key)).collect())).collect()
}

#[test]
fn rows_go_to_the_partition_of_their_event_time() {
    let mut cell = Cell::<Row>::new([], BTreeMap::new());
    assert_eq!(cell.insert(10, row(1, 2 * HOUR + 5)), Insert::Held);
    assert_eq!(cell.insert(10, row(2, 0)), Insert::Held);
    assert_eq!(cell.insert(11, row(3, 2 * HOUR)), Insert::Held);
    assert_eq!(cell.held(), 3);
    assert!(cell.cut(Some(100), 10).is_empty(), "no part is full");
    let parts = cell.close(10);
    assert_eq!(shape(&parts), vec![(0, 0, vec![(10, 2)]), (2, 0, vec![(10, 1), (11, 3)])]);
    assert_eq!(cell.held(), 0);
}

#[test]
fn a_full_part_is_cut_only_once_the_frontier_passes_its_last_row() {
    let mut cell = Cell::<Row>::new([], BTreeMap::new());
    for (t, k) in [(5, 50), (5, 10), (6, 60), (7, 70)] {
        cell.insert(t, row(k, 0));
    }
    // Three rows make a part; the third is at time 6.
    assert!(cell.cut(Some(6), 3).is_empty(), "time 6 may still get rows");
    let parts = cell.cut(Some(7), 3);
    // The part holds the first three in (time, key) order, written in key order.
    assert_eq!(shape(&parts), vec![(0, 0, vec![(5, 10), (5, 50), (6, 60)])]);
    assert_eq!(cell.held(), 1);
    // A row still to come sorts after the cut, whatever its key.
    cell.insert(7, row(1, 0));
    assert_eq!(shape(&cell.close(3)), vec![(0, 1, vec![(7, 1), (7, 70)])]);
}

#[test]
fn exactly_max_rows_make_one_part_and_one_more_makes_two() {
    for (n, want) in [(0usize, vec![]), (1, vec![1]), (3, vec![3]), (4, vec![3, 1]), (7, vec![3, 3, 1])] {
        let mut cell = Cell::<Row>::new([], BTreeMap::new());
        for k in 0..n as u64 {
            cell.insert(1, row(k, 0));
        }
        let sizes: Vec<usize> = cell.close(3).iter().map(|p| p.rows.len()).collect();
        assert_eq!(sizes, want, "{n} rows");
    }
}

#[test]
fn stored_keys_are_duplicates_and_parts_continue_after_stored_ones() {
    let mut cell = Cell::<Row>::new([1, 2], BTreeMap::from([(Partition::of_ns(0), 4)]));
    assert_eq!(cell.insert(3, row(1, 0)), Insert::Duplicate(3));
    assert_eq!(cell.insert(3, row(3, 0)), Insert::Held);
    assert_eq!(cell.insert(3, row(4, HOUR)), Insert::Held);
    assert_eq!(shape(&cell.close(10)), vec![(0, 4, vec![(3, 3)]), (1, 0, vec![(3, 4)])]);
}

#[test]
fn of_two_held_rows_with_one_key_the_earlier_time_stays() {
    let mut cell = Cell::<Row>::new([], BTreeMap::new());
    assert_eq!(cell.insert(8, Row { key: 1, event_ns: 0, copy: 8 }), Insert::Held);
    assert_eq!(cell.insert(9, Row { key: 1, event_ns: 0, copy: 9 }), Insert::Duplicate(9));
    assert_eq!(cell.insert(8, Row { key: 1, event_ns: 0, copy: 80 }), Insert::Duplicate(8));
    assert_eq!(cell.insert(5, Row { key: 1, event_ns: 0, copy: 5 }), Insert::Replaced(8));
    assert_eq!(cell.held(), 1);
    let parts = cell.close(10);
    assert_eq!(parts[0].rows, vec![(5, Row { key: 1, event_ns: 0, copy: 5 })]);
    // Once written, a key is stored.
    assert_eq!(cell.insert(1, row(1, 0)), Insert::Duplicate(1));
}

/// The rows of a run, each at a time, arriving in some order, with the frontier advancing as
/// the order allows (never past a time still to come).
fn run(arrivals: &[(u64, u64, u64)], stored: &[u64], max_rows: usize) -> Shape {
    let mut cell = Cell::<Row>::new(stored.iter().copied(), BTreeMap::new());
    let mut out = Vec::new();
    for (i, &(t, k, hour)) in arrivals.iter().enumerate() {
        cell.insert(t, row(k, hour * HOUR));
        let frontier = arrivals[i + 1..].iter().map(|a| a.0).min();
        out.extend(cell.cut(frontier.or(Some(u64::MAX)), max_rows));
    }
    out.extend(cell.close(max_rows));
    let mut s = shape(&out);
    s.sort();
    s
}

proptest! {
    /// Where the parts are cut depends on the rows only: any arrival order (the frontier being
    /// the least time still to come) gives the same files with the same rows; every key is in
    /// exactly one file, at its earliest time.
    #[test]
    fn parts_do_not_depend_on_arrival_order(
        rows in proptest::collection::vec((0u64..6, 0u64..40), 0..60),
        max_rows in 1usize..8,
        seed in any::<u64>(),
    ) {
        // Two rows with one key are the same row (the contract): the partition follows the key.
        let rows: Vec<(u64, u64, u64)> = rows.into_iter().map(|(t, k)| (t, k, k % 2)).collect();
        let mut sorted = rows.clone();
        sorted.sort();
        // Another order: any (a seeded shuffle); the frontier is the least time still to come.
        let mut x = seed | 1;
        let mut keyed: Vec<(u64, (u64, u64, u64))> = sorted
            .iter()
            .map(|&r| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x, r)
            })
            .collect();
        keyed.sort();
        let shuffled: Vec<(u64, u64, u64)> = keyed.into_iter().map(|(_, r)| r).collect();
        let a = run(&sorted, &[], max_rows);
        let b = run(&shuffled, &[], max_rows);
        prop_assert_eq!(&a, &b);
        // Every distinct key once, at its earliest time.
        let mut earliest: BTreeMap<u64, u64> = BTreeMap::new();
        for &(t, k, _) in &rows {
            let e = earliest.entry(k).or_insert(t);
            *e = (*e).min(t);
        }
        let mut got: Vec<(u64, u64)> = a.iter().flat_map(|(_, _, r)| r.iter().map(|&(t, k)| (k, t))).collect();
        got.sort();
        prop_assert_eq!(got, earliest.into_iter().collect::<Vec<_>>());
        for (_, _, r) in &a {
            prop_assert!(r.len() <= max_rows && !r.is_empty());
        }
    }

    /// A restart that stored some parts of a cell and re-emits the whole cell writes exactly the
    /// missing rows, under the part numbers that follow.
    #[test]
    fn a_restart_adds_only_the_missing_rows(
        keys in proptest::collection::btree_set(0u64..200, 0..50),
        max_rows in 1usize..6,
        stored_parts in 0usize..10,
    ) {
        let arrivals: Vec<(u64, u64, u64)> = keys.iter().map(|&k| (k % 7, k, 0)).collect();
        let whole = run(&arrivals, &[], max_rows);
        let stored_parts = stored_parts.min(whole.len());
        let stored: Vec<u64> = whole[..stored_parts].iter().flat_map(|(_, _, r)| r.iter().map(|x| x.1)).collect();
        let mut cell = Cell::<Row>::new(stored.iter().copied(), BTreeMap::from([(Partition::of_ns(0), stored_parts as u32)]));
        let mut out = Vec::new();
        let mut sorted = arrivals.clone();
        sorted.sort();
        for (t, k, _) in sorted {
            cell.insert(t, row(k, 0));
        }
        out.extend(cell.close(max_rows));
        // An uninterrupted run's remaining files, same names, same rows.
        prop_assert_eq!(shape(&out), whole[stored_parts..].to_vec());
    }
}
