//! Splitting a task's inputs into shards (docs/architecture.md, "Shard planning").
//!
//! Pure: the scheduler gives the items, the live cores and the bus's message
//! limit; this module answers with contiguous index ranges. Every item lands in
//! exactly one shard, in order, and no shard's message exceeds the limit.

use serde::{Deserialize, Serialize};

/// A contiguous run of items: indices `start .. start + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRange {
    /// Index of the first item.
    pub start: u64,
    /// Items in the shard.
    pub len: u64,
}

impl ShardRange {
    /// Index one past the last item.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// What the planner needs to know about the cluster and the bus.
#[derive(Debug, Clone, Copy)]
pub struct PlanLimits {
    /// Total cores of the live workers; 0 plans as for one single-core worker.
    pub live_cores: u32,
    /// Shards per live core in the first round of a guided plan (≈2).
    pub oversplit: u32,
    /// The bus's largest message, in bytes.
    pub max_message_bytes: usize,
    /// Bytes a shard message takes besides its items (script, ids, framing).
    pub envelope_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
/// A task that cannot be split into messages the bus accepts.
pub enum PlanError {
    #[error(
        "item {index} takes {bytes} bytes in a shard message, more than the {budget} bytes left under the bus's message limit"
    )]
    /// One item alone does not fit a shard message.
    ItemTooLarge {
        /// The item's index.
        index: u64,
        /// Bytes it takes in a message.
        bytes: usize,
        /// Bytes a message has room for.
        budget: usize,
    },
    #[error(
        "the script alone takes {envelope_bytes} bytes, leaving no room for items under the bus's {max_message_bytes}-byte message limit"
    )]
    /// The script alone fills a shard message.
    EnvelopeTooLarge {
        /// Bytes the message takes without items.
        envelope_bytes: usize,
        /// The bus's largest message.
        max_message_bytes: usize,
    },
}

/// Bytes `text` takes inside a JSON string once escaped (without quotes).
pub fn json_escaped_len(text: &str) -> usize {
    text.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// Bytes an input's own text takes in a shard message: escaped when it is
/// UTF-8, its base64 when not (as [`crate::Bytes`] writes it).
pub fn input_encoded_len(item: &[u8]) -> usize {
    match std::str::from_utf8(item) {
        Ok(text) => json_escaped_len(text),
        Err(_) => item.len().div_ceil(3) * 4,
    }
}

/// Bytes `item` takes as an element of a shard message's JSON array and a
/// separating comma: its text in quotes, or in `{"base64":"..."}` when it
/// is not UTF-8.
pub fn item_wire_bytes(item: &[u8]) -> usize {
    let framing = match std::str::from_utf8(item) {
        Ok(_) => r#""","#.len(),
        Err(_) => r#"{"base64":""},"#.len(),
    };
    input_encoded_len(item) + framing
}

/// The lengths of a guided plan of `items` for `live_slots` slots: each
/// shard takes `remaining ÷ (oversplit × slots)` items, rounded up, so
/// shards shrink as the plan goes on and the last ones are single items.
///
/// Why: under late binding slots claim shards in order, so a plan whose
/// early shards are large (few store round trips per item) and whose late
/// shards are small (every slot runs dry within about one item of the
/// others) gives both throughput and a short tail, whatever the mix of
/// workers. The count grows only with the logarithm of the items:
/// about `oversplit × slots × ln(items ÷ (oversplit × slots))`, plus the
/// single-item tail.
pub fn guided_lengths(items: u64, live_slots: u32, oversplit: u32) -> Vec<u64> {
    let divisor = u64::from(oversplit.max(1)) * u64::from(live_slots.max(1));
    let mut lengths = Vec::new();
    let mut remaining = items;
    // ends: each round takes at least one item.
    while remaining > 0 {
        let len = remaining.div_ceil(divisor);
        lengths.push(len);
        remaining -= len;
    }
    lengths
}

/// Splits `items` into guided shards ([`guided_lengths`]) for
/// `limits.live_cores` slots, each cut further where it would not fit in the
/// bus's message limit.
pub fn plan_guided<S: AsRef<[u8]>>(
    items: &[S],
    limits: PlanLimits,
) -> Result<Vec<ShardRange>, PlanError> {
    let budget = limits
        .max_message_bytes
        .checked_sub(limits.envelope_bytes)
        .filter(|b| *b > 0)
        .ok_or(PlanError::EnvelopeTooLarge {
            envelope_bytes: limits.envelope_bytes,
            max_message_bytes: limits.max_message_bytes,
        })?;
    let mut shards = Vec::new();
    let mut start = 0usize;
    for len in guided_lengths(items.len() as u64, limits.live_cores, limits.oversplit) {
        let end = start + len as usize;
        split_by_size(items, start, end, budget, &mut shards)?;
        start = end;
    }
    Ok(shards)
}

/// Appends `start..end` to `shards`, cut into pieces that fit in `budget` bytes.
fn split_by_size<S: AsRef<[u8]>>(
    items: &[S],
    start: usize,
    end: usize,
    budget: usize,
    shards: &mut Vec<ShardRange>,
) -> Result<(), PlanError> {
    let mut piece_start = start;
    let mut piece_bytes = 0usize;
    for (index, item) in items.iter().enumerate().take(end).skip(start) {
        let bytes = item_wire_bytes(item.as_ref());
        if bytes > budget {
            return Err(PlanError::ItemTooLarge {
                index: index as u64,
                bytes,
                budget,
            });
        }
        if piece_bytes + bytes > budget {
            shards.push(range(piece_start, index));
            piece_start = index;
            piece_bytes = 0;
        }
        piece_bytes += bytes;
    }
    if end > piece_start {
        shards.push(range(piece_start, end));
    }
    Ok(())
}

fn range(start: usize, end: usize) -> ShardRange {
    ShardRange {
        start: start as u64,
        len: (end - start) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(live_cores: u32, max_message_bytes: usize) -> PlanLimits {
        PlanLimits {
            live_cores,
            oversplit: 2,
            max_message_bytes,
            envelope_bytes: 10,
        }
    }

    fn items(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("item-{i}")).collect()
    }

    #[test]
    fn no_items_means_no_shards() {
        assert!(
            plan_guided::<String>(&[], limits(4, 1 << 20))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn no_live_worker_plans_as_for_one_single_core_worker() {
        // 10 items ÷ (2 × 1 slot): 5, 3, 1, 1.
        let plan = plan_guided(&items(10), limits(0, 1 << 20)).unwrap();
        let lens: Vec<u64> = plan.iter().map(|s| s.len).collect();
        assert_eq!(lens, vec![5, 3, 1, 1]);
    }

    #[test]
    fn the_last_item_is_not_dropped() {
        // The seed's split lost the last item when the count did not divide evenly.
        let plan = plan_guided(&items(7), limits(2, 1 << 20)).unwrap();
        assert_eq!(plan.last().unwrap().end(), 7);
        assert_eq!(plan.iter().map(|s| s.len).sum::<u64>(), 7);
    }

    #[test]
    fn never_more_shards_than_items() {
        assert_eq!(
            plan_guided(&items(3), limits(64, 1 << 20)).unwrap().len(),
            3
        );
    }

    #[test]
    fn splits_further_to_respect_the_message_limit() {
        // 100 items of ~10 wire bytes with a 60-byte budget: no shard over 60 bytes.
        let plan = plan_guided(&items(100), limits(1, 70)).unwrap();
        assert!(plan.len() > 2);
        for shard in &plan {
            let bytes: usize = (shard.start..shard.end())
                .map(|i| item_wire_bytes(format!("item-{i}").as_bytes()))
                .sum();
            assert!(bytes <= 60);
        }
    }

    #[test]
    fn an_item_larger_than_a_message_is_an_error_naming_it() {
        let mut list = items(5);
        list[3] = "x".repeat(100);
        let err = plan_guided(&list, limits(1, 50)).unwrap_err();
        assert!(
            matches!(err, PlanError::ItemTooLarge { index: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_script_that_fills_the_message_alone_is_an_error() {
        let err = plan_guided(&items(3), limits(1, 10)).unwrap_err();
        assert!(
            matches!(
                err,
                PlanError::EnvelopeTooLarge {
                    envelope_bytes: 10,
                    max_message_bytes: 10
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn wire_bytes_match_serde_json_for_awkward_text() {
        for text in [
            "",
            "plain",
            "quo\"te",
            "back\\slash",
            "new\nline",
            "\u{0}\u{1f}\u{7f}",
            "é→😀",
            "\t\r\u{8}\u{c}",
        ] {
            let json = serde_json::to_string(text).unwrap();
            assert_eq!(item_wire_bytes(text.as_bytes()), json.len() + 1, "{text:?}");
        }
    }

    #[test]
    fn wire_bytes_of_an_input_that_is_not_utf8_match_its_base64_form() {
        for bytes in [&b"caf\xe9"[..], b"\xff\xfe", b"\xff", b"ab\xffcd\n"] {
            let json = serde_json::to_string(&crate::Bytes::from(bytes)).unwrap();
            assert_eq!(item_wire_bytes(bytes), json.len() + 1, "{json}");
        }
    }

    #[test]
    fn a_guided_plan_shrinks_to_single_items_and_stays_small() {
        let lengths = guided_lengths(10_000, 64, 2);
        assert_eq!(lengths.iter().sum::<u64>(), 10_000);
        assert_eq!(lengths[0], 79, "the first shard: 10,000 ÷ 128, rounded up");
        assert!(lengths.windows(2).all(|w| w[0] >= w[1]), "{lengths:?}");
        assert_eq!(*lengths.last().unwrap(), 1);
        assert!(lengths.len() < 1_000, "{} shards", lengths.len());
    }

    #[test]
    fn a_guided_plan_of_fewer_items_than_slots_is_one_item_per_shard() {
        assert_eq!(guided_lengths(5, 8, 2), vec![1; 5]);
        assert!(guided_lengths(0, 8, 2).is_empty());
    }

    proptest! {
        #[test]
        fn a_guided_plan_puts_every_item_in_one_shard_in_order_under_the_size_limit(
            list in proptest::collection::vec("\\PC{0,12}", 0..300),
            live_cores in 0u32..40,
            oversplit in 1u32..4,
            max_message_bytes in 60usize..2000,
        ) {
            let limits = PlanLimits { live_cores, oversplit, max_message_bytes, envelope_bytes: 20 };
            match plan_guided(&list, limits) {
                Ok(plan) => {
                    let mut next = 0u64;
                    for shard in &plan {
                        prop_assert!(shard.len >= 1);
                        prop_assert_eq!(shard.start, next);
                        next = shard.end();
                        let bytes: usize = list[shard.start as usize..shard.end() as usize]
                            .iter()
                            .map(|i| item_wire_bytes(i.as_bytes()))
                            .sum();
                        prop_assert!(bytes + limits.envelope_bytes <= max_message_bytes);
                    }
                    prop_assert_eq!(next, list.len() as u64);
                }
                Err(PlanError::ItemTooLarge { index, .. }) => {
                    prop_assert!(item_wire_bytes(list[index as usize].as_bytes()) + 20 > max_message_bytes);
                }
                Err(other) => prop_assert!(false, "unexpected {other}"),
            }
        }

        #[test]
        fn guided_lengths_never_grow_and_end_in_single_items(
            n in 0u64..200_000,
            slots in 0u32..256,
            oversplit in 1u32..5,
        ) {
            let lengths = guided_lengths(n, slots, oversplit);
            prop_assert_eq!(lengths.iter().sum::<u64>(), n);
            prop_assert!(lengths.windows(2).all(|w| w[0] >= w[1]));
            let divisor = u64::from(oversplit) * u64::from(slots.max(1));
            // The tail: once fewer items than `divisor` remain, every shard
            // is one item, so at least `divisor - 1` end the plan.
            let tail = (divisor as usize - 1).min(lengths.len());
            prop_assert!(lengths.iter().rev().take(tail).all(|l| *l == 1), "{:?}", lengths);
        }
    }

    proptest! {
        #[test]
        fn wire_bytes_match_serde_json(text in "\\PC*|[\\x00-\\x7f]*") {
            prop_assert_eq!(item_wire_bytes(text.as_bytes()), serde_json::to_string(&text).unwrap().len() + 1);
        }
    }
}
