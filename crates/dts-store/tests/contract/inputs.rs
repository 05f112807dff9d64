//! Contract: a task's inputs read by range, as a slot that claimed a shard
//! reads them.

use crate::helpers::*;
use dts_model::{Bytes, ItemResult, now_millis};
use dts_store::{DynStore, ResultFilter};

/// Awkward inputs (quotes, newlines, NUL, unicode, empty strings) among
/// plain ones, enough of them that ranges cross any internal paging.
fn awkward(n: usize) -> Vec<Bytes> {
    let odd = [
        "",
        "quo\"te and 'single'",
        "back\\slash",
        "new\nline\r\n\ttab",
        "nul \u{0} byte",
        "é→😀 中文 עברית",
        "{\"json\": [1, 2]}",
        "  spaces around  ",
    ];
    (0..n)
        .map(|i| match i % 5 {
            0 => Bytes::from(odd[(i / 5) % odd.len()]),
            _ => Bytes::from(format!("item-{i}")),
        })
        .collect()
}

async fn insert_inputs(store: &DynStore, inputs: &[Bytes]) -> String {
    let task = task_with(&dts_model::new_task_id(), now_millis(), inputs.len());
    store.insert_task(&task, inputs).await.unwrap();
    task.id
}

async fn range(store: &DynStore, id: &str, start: u64, len: u64) -> Vec<Bytes> {
    store
        .inputs_range(id, start, len)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("task {id} is stored"))
}

pub(crate) async fn input_ranges_at_the_start_middle_and_end_read_exactly_those_inputs(
    store: DynStore,
) {
    let all = awkward(3_000);
    let id = insert_inputs(&store, &all).await;
    for (start, len) in [
        (0, 1),
        (0, 7),
        (1, 1),
        (5, 3),
        (1_000, 100),
        (1_023, 2),
        (1_024, 1),
        (1_500, 1_200),
        (2_047, 900),
        (2_999, 1),
        (2_990, 10),
        (0, 3_000),
    ] {
        let (s, e) = (start as usize, (start + len) as usize);
        assert_eq!(
            range(&store, &id, start, len).await,
            all[s..e],
            "inputs {start}+{len}"
        );
    }
}

pub(crate) async fn a_range_past_the_end_is_clamped_and_one_beyond_it_is_empty(store: DynStore) {
    let all = awkward(30);
    let id = insert_inputs(&store, &all).await;
    assert_eq!(range(&store, &id, 25, 10).await, all[25..30]);
    assert_eq!(range(&store, &id, 0, u64::MAX).await, all);
    assert_eq!(range(&store, &id, 29, u64::MAX).await, all[29..30]);
    assert_eq!(range(&store, &id, 30, 1).await, Vec::<Bytes>::new());
    assert_eq!(range(&store, &id, 1_000, 5).await, Vec::<Bytes>::new());
    assert_eq!(
        range(&store, &id, u64::MAX, u64::MAX).await,
        Vec::<Bytes>::new()
    );
    assert_eq!(range(&store, &id, 3, 0).await, Vec::<Bytes>::new());
}

pub(crate) async fn a_task_with_no_inputs_reads_an_empty_range(store: DynStore) {
    let id = insert_inputs(&store, &[]).await;
    assert_eq!(store.inputs(&id).await.unwrap(), Some(Vec::new()));
    assert_eq!(range(&store, &id, 0, 10).await, Vec::<Bytes>::new());
    assert_eq!(range(&store, &id, 0, 0).await, Vec::<Bytes>::new());
}

pub(crate) async fn input_ranges_of_an_unknown_task_read_as_none(store: DynStore) {
    insert_inputs(&store, &awkward(3)).await;
    let unknown = dts_model::new_task_id();
    assert_eq!(store.inputs_range(&unknown, 0, 3).await.unwrap(), None);
    assert_eq!(store.inputs_range(&unknown, 0, 0).await.unwrap(), None);
    assert_eq!(store.inputs_range(&unknown, 5, 1).await.unwrap(), None);
}

pub(crate) async fn a_hundred_thousand_inputs_read_in_guided_ranges_equal_the_whole_list(
    store: DynStore,
) {
    let all = awkward(100_000);
    let id = insert_inputs(&store, &all).await;
    assert_eq!(store.inputs(&id).await.unwrap().as_ref(), Some(&all));
    let lengths = dts_model::plan::guided_lengths(all.len() as u64, 8, 2);
    assert!(lengths.len() > 100, "{} ranges", lengths.len());
    let mut read = Vec::with_capacity(all.len());
    let mut start = 0;
    for len in lengths {
        let piece = range(&store, &id, start, len).await;
        assert_eq!(piece.len() as u64, len, "inputs {start}+{len}");
        read.extend(piece);
        start += len;
    }
    assert_eq!(start, 100_000);
    assert_eq!(read, all);
}

pub(crate) async fn inputs_that_are_not_utf8_and_their_results_read_back_exactly(store: DynStore) {
    // Latin-1 "café" and a UTF-16 byte order mark: file names a user has.
    let latin1 = Bytes::new(b"caf\xe9".to_vec());
    let bom = Bytes::new(b"\xff\xfe".to_vec());
    let all = vec![latin1.clone(), Bytes::from("ok"), bom.clone()];
    let id = insert_inputs(&store, &all).await;
    assert_eq!(store.inputs(&id).await.unwrap(), Some(all.clone()));
    assert_eq!(range(&store, &id, 0, 1).await, vec![latin1.clone()]);
    assert_eq!(range(&store, &id, 1, 2).await, all[1..].to_vec());

    // Results carry their input: the task's own, and one that is not (a
    // store keeps an input only when it differs from the task's).
    let own = ItemResult {
        input: latin1.clone(),
        ..ok(0)
    };
    let other = ItemResult {
        input: Bytes::new(b"\xe9t\xe9".to_vec()),
        ..ok(2)
    };
    store
        .record_results(&id, &[own.clone(), other.clone()])
        .await
        .unwrap();
    let (total, page) = store.results(&id, ResultFilter::All, 0, 10).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(page, vec![own, other]);
}
