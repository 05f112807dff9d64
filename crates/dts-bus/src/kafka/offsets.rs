//! Which offsets a group member may commit, and where it must rewind.
//!
//! One [`OffsetTracker`] belongs to each group member (`consumer.rs`). The
//! rebalance callback tells it which partitions the member owns, the member's
//! driver tells it what was delivered, and each delivery's ack or drop tells
//! it what finished. It answers two questions:
//!
//! - after an ack: up to where may the partition be committed? Never past a
//!   message that is still in flight or was given back, because a commit is a
//!   promise to the group that everything before it is done.
//! - after a drop without ack: where must the partition be rewound so the
//!   message is delivered again while the member keeps running?
//!
//! Every assignment of a partition starts a new [`Generation`]. A delivery
//! remembers the generation it came from, and an ack or drop from an older
//! generation changes nothing: the partition may belong to another member by
//! now, which delivers again from the committed offset.
//!
//! Pure bookkeeping with no librdkafka in it, so it is tested on its own.

use std::collections::{BTreeMap, HashMap};

/// One period of ownership of one partition by this member.
pub(crate) type Generation = u64;

#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    partitions: HashMap<i32, PartitionTrack>,
    /// The last generation handed out; each assignment takes the next one.
    last_generation: Generation,
}

#[derive(Debug)]
struct PartitionTrack {
    generation: Generation,
    /// Offsets delivered in this generation that no commit has passed yet.
    /// The lowest one not done is where a commit must stop.
    unfinished: BTreeMap<i64, Entry>,
    /// The offset the fetcher hands out next, as far as this member knows:
    /// one past the last delivery, or where it was last rewound to. A given
    /// back message below it needs a rewind; one at or above it comes again
    /// by itself.
    next_fetch: Option<i64>,
    /// The highest offset a commit was asked for in this generation, so
    /// commits only move forward.
    committed: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// Deliveries of this offset still out (a rewind can deliver a message
    /// again while the first delivery is still being worked on).
    copies: u32,
    /// Acknowledged by one of its deliveries.
    done: bool,
}

impl OffsetTracker {
    /// The member now owns `partition`; bookkeeping starts afresh (the
    /// fetcher starts from the group's committed offset).
    pub(crate) fn assign(&mut self, partition: i32) -> Generation {
        self.last_generation += 1;
        self.partitions.insert(
            partition,
            PartitionTrack {
                generation: self.last_generation,
                unfinished: BTreeMap::new(),
                next_fetch: None,
                committed: None,
            },
        );
        self.last_generation
    }

    /// The member no longer owns `partition`: what is in flight from it can
    /// no longer be committed or rewound by this member.
    pub(crate) fn revoke(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// The partitions the member owns now.
    pub(crate) fn assigned(&self) -> Vec<i32> {
        let mut partitions: Vec<i32> = self.partitions.keys().copied().collect();
        partitions.sort_unstable();
        partitions
    }

    /// Whether a delivery from `generation` of `partition` is still current.
    pub(crate) fn owns(&self, partition: i32, generation: Generation) -> bool {
        self.current(partition, generation).is_some()
    }

    /// Records that the message at `offset` is handed out. `None` when the
    /// member does not own the partition (the message must not be handed
    /// out: its owner delivers it).
    pub(crate) fn delivered(&mut self, partition: i32, offset: i64) -> Option<Generation> {
        let track = self.partitions.get_mut(&partition)?;
        track.unfinished.entry(offset).or_default().copies += 1;
        track.next_fetch = Some(offset + 1);
        Some(track.generation)
    }

    /// Records an ack. Returns the offset to commit (one past the highest
    /// offset below which everything delivered is done) when that moved
    /// forward.
    pub(crate) fn acked(
        &mut self,
        partition: i32,
        generation: Generation,
        offset: i64,
    ) -> Option<i64> {
        let track = self.current_mut(partition, generation)?;
        let entry = track.unfinished.get_mut(&offset)?;
        entry.copies = entry.copies.saturating_sub(1);
        entry.done = true;
        track.advance()
    }

    /// Records a delivery dropped without ack. Returns the offset to rewind
    /// the partition to when the message would otherwise not come again.
    pub(crate) fn dropped(
        &mut self,
        partition: i32,
        generation: Generation,
        offset: i64,
    ) -> Option<i64> {
        let track = self.current_mut(partition, generation)?;
        let entry = track.unfinished.get_mut(&offset)?;
        entry.copies = entry.copies.saturating_sub(1);
        if entry.done || entry.copies > 0 {
            // Done already, or another delivery of it is still being worked on.
            return None;
        }
        let lowest_given_back = track
            .unfinished
            .iter()
            .find(|(_, entry)| !entry.done && entry.copies == 0)
            .map(|(offset, _)| *offset)?;
        match track.next_fetch {
            Some(next) if lowest_given_back >= next => None,
            _ => {
                track.next_fetch = Some(lowest_given_back);
                Some(lowest_given_back)
            }
        }
    }

    fn current(&self, partition: i32, generation: Generation) -> Option<&PartitionTrack> {
        self.partitions
            .get(&partition)
            .filter(|track| track.generation == generation)
    }

    fn current_mut(
        &mut self,
        partition: i32,
        generation: Generation,
    ) -> Option<&mut PartitionTrack> {
        self.partitions
            .get_mut(&partition)
            .filter(|track| track.generation == generation)
    }
}

impl PartitionTrack {
    /// Forgets the done prefix and returns the new commit offset if it moved.
    fn advance(&mut self) -> Option<i64> {
        let first = *self.unfinished.keys().next()?;
        let last = *self.unfinished.keys().next_back()?;
        let point = self
            .unfinished
            .iter()
            .find(|(_, entry)| !entry.done)
            .map(|(offset, _)| *offset)
            .unwrap_or(last + 1);
        if point <= first {
            // The lowest delivery is not done: nothing new to commit.
            return None;
        }
        self.unfinished = self.unfinished.split_off(&point);
        match self.committed {
            Some(committed) if point <= committed => None,
            _ => {
                self.committed = Some(point);
                Some(point)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(tracker: &mut OffsetTracker, partition: i32, offsets: &[i64]) -> Generation {
        let mut generation = 0;
        for &offset in offsets {
            generation = tracker
                .delivered(partition, offset)
                .expect("partition assigned");
        }
        generation
    }

    #[test]
    fn acks_in_order_commit_one_past_each_message() {
        let mut t = OffsetTracker::default();
        let g = t.assign(0);
        deliver(&mut t, 0, &[0, 1, 2]);
        assert_eq!(t.acked(0, g, 0), Some(1));
        assert_eq!(t.acked(0, g, 1), Some(2));
        assert_eq!(t.acked(0, g, 2), Some(3));
    }

    #[test]
    fn a_commit_never_passes_an_unfinished_message() {
        let mut t = OffsetTracker::default();
        let g = t.assign(0);
        deliver(&mut t, 0, &[10, 11, 12]);
        assert_eq!(t.acked(0, g, 11), None);
        assert_eq!(t.acked(0, g, 12), None);
        assert_eq!(t.acked(0, g, 10), Some(13), "all three done at once");
    }

    #[test]
    fn the_commit_stops_at_the_lowest_unfinished_offset() {
        let mut t = OffsetTracker::default();
        let g = t.assign(0);
        deliver(&mut t, 0, &[0, 1, 2, 3]);
        assert_eq!(t.acked(0, g, 0), Some(1));
        assert_eq!(t.acked(0, g, 2), None);
        assert_eq!(t.acked(0, g, 1), Some(3), "stops before 3, still in flight");
    }

    #[test]
    fn offsets_with_gaps_commit_up_to_the_next_unfinished_one() {
        let mut t = OffsetTracker::default();
        let g = t.assign(0);
        // Compaction or transaction markers leave holes in the offsets.
        deliver(&mut t, 0, &[5, 9]);
        assert_eq!(t.acked(0, g, 5), Some(9));
        assert_eq!(t.acked(0, g, 9), Some(10));
    }

    #[test]
    fn partitions_are_tracked_separately() {
        let mut t = OffsetTracker::default();
        let g0 = t.assign(0);
        let g1 = t.assign(1);
        deliver(&mut t, 0, &[0]);
        deliver(&mut t, 1, &[0, 1]);
        assert_eq!(t.acked(1, g1, 1), None);
        assert_eq!(t.acked(0, g0, 0), Some(1));
        assert_eq!(t.acked(1, g1, 0), Some(2));
        assert_eq!(t.assigned(), vec![0, 1]);
    }

    #[test]
    fn a_dropped_delivery_rewinds_to_it() {
        let mut t = OffsetTracker::default();
        let g = t.assign(0);
        deliver(&mut t, 0, &[0, 1, 2]);
        assert_eq!(t.dropped(0, g, 1), Some(1));
        // The fetcher is now at 1: dropping 2 as well needs no second rewind.
        assert_eq!(t.dropped(0, g, 2), None);
        assert_eq!(t.acked(0, g, 0), Some(1), "no commit past the dropped 1");
    }

    #[test]
    fn after_a_rewind_the_lowest_given_back_offset_is_the_target() {
        let mut t = OffsetTracker::default();
        let g = t.assign(0);
        deliver(&mut t, 0, &[0, 1, 2, 3]);
        assert_eq!(t.dropped(0, g, 2), Some(2));
        // Redelivery of 2 has started; dropping 1 must go back further.
        deliver(&mut t, 0, &[2]);
        assert_eq!(t.dropped(0, g, 1), Some(1));
    }

    #[test]
    fn a_drop_while_another_copy_is_out_does_not_rewind() {
        let mut t = OffsetTracker::default();
        let g = t.assign(0);
        deliver(&mut t, 0, &[0, 1]);
        assert_eq!(t.dropped(0, g, 0), Some(0));
        // The rewind delivers 0 and 1 again while the first 1 is still out.
        deliver(&mut t, 0, &[0, 1]);
        assert_eq!(
            t.dropped(0, g, 1),
            None,
            "the second copy of 1 is still out"
        );
        assert_eq!(t.acked(0, g, 0), Some(1));
        assert_eq!(t.acked(0, g, 1), Some(2));
    }

    #[test]
    fn dropping_a_message_already_acked_changes_nothing() {
        let mut t = OffsetTracker::default();
        let g = t.assign(0);
        deliver(&mut t, 0, &[0, 1]);
        assert_eq!(t.dropped(0, g, 0), Some(0));
        deliver(&mut t, 0, &[0, 1]); // 1 now has two copies out
        assert_eq!(t.acked(0, g, 1), None);
        assert_eq!(t.dropped(0, g, 1), None, "the other copy acked it");
        assert_eq!(t.acked(0, g, 0), Some(2));
    }

    #[test]
    fn acks_and_drops_from_a_revoked_partition_change_nothing() {
        let mut t = OffsetTracker::default();
        let g = t.assign(0);
        deliver(&mut t, 0, &[0, 1]);
        t.revoke(0);
        assert!(!t.owns(0, g));
        assert_eq!(t.acked(0, g, 0), None);
        assert_eq!(t.dropped(0, g, 1), None);
        assert_eq!(t.delivered(0, 2), None, "not owned: not handed out");
    }

    #[test]
    fn a_new_assignment_starts_a_new_generation() {
        let mut t = OffsetTracker::default();
        let old = t.assign(0);
        deliver(&mut t, 0, &[0, 1]);
        t.revoke(0);
        let new = t.assign(0);
        assert_ne!(old, new);
        assert!(t.owns(0, new));
        assert!(!t.owns(0, old));
        // The old delivery of 0 acks late: nothing is committed for it, and
        // the new generation (which starts from the committed offset) is
        // not disturbed.
        assert_eq!(t.acked(0, old, 0), None);
        assert_eq!(deliver(&mut t, 0, &[0]), new);
        assert_eq!(t.acked(0, new, 0), Some(1));
    }

    #[test]
    fn commits_only_move_forward() {
        let mut t = OffsetTracker::default();
        let g = t.assign(0);
        deliver(&mut t, 0, &[0, 1, 2]);
        assert_eq!(t.acked(0, g, 0), Some(1));
        assert_eq!(t.acked(0, g, 1), Some(2));
        // A late copy of 0 (say, delivered before a rewind took effect)
        // comes and is acked: nothing goes backwards.
        deliver(&mut t, 0, &[0]);
        assert_eq!(t.acked(0, g, 0), None);
        assert_eq!(t.acked(0, g, 2), Some(3));
    }

    #[test]
    fn a_late_copy_below_the_commit_holds_the_commit_until_it_is_acked() {
        let mut t = OffsetTracker::default();
        let g = t.assign(0);
        deliver(&mut t, 0, &[0, 1]);
        assert_eq!(t.acked(0, g, 0), Some(1));
        deliver(&mut t, 0, &[0]);
        assert_eq!(t.acked(0, g, 1), None, "0 is out again, below it");
        assert_eq!(t.acked(0, g, 0), Some(2));
    }
}
