//! Readers' pins on the live rows of committed blocks.
//!
//! A reader lists committed blocks, then reads live rows excluding them. A block committed
//! between the two is in neither unless its rows are still live: so a reader takes a pin
//! before listing, and the ingester keeps a committed block's rows while a pin taken before
//! that block's commit is held. With no such pin they are released at once; a pin is honoured
//! for at most the flushed grace, after which the reads it covers fail rather than miss rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::live::LivePin;

/// The pins readers hold, and the numbering of commits they are compared with.
#[derive(Debug, Default)]
pub struct Pins(parking_lot::Mutex<PinCounts>);

#[derive(Debug, Default)]
struct PinCounts {
    /// Blocks committed so far: the n-th block committed has number n.
    commits: u64,
    /// The greatest number of a committed block whose live rows were released.
    released_through: u64,
    /// Pins held, counted by the number of commits when each was taken.
    held: BTreeMap<u64, usize>,
}

impl Pins {
    /// A pin covering every block committed from now on.
    pub fn pin(self: &Arc<Self>) -> Arc<dyn LivePin> {
        let mut counts = self.0.lock();
        let commits = counts.commits;
        *counts.held.entry(commits).or_default() += 1;
        Arc::new(Pin {
            pins: self.clone(),
            commits,
        })
    }

    /// Numbers a block just committed: listed by every reader from now on.
    pub fn committed(&self) -> u64 {
        let mut counts = self.0.lock();
        counts.commits += 1;
        counts.commits
    }

    /// Whether the rows of the block committed as `number` may be released: no held pin was
    /// taken before its commit.
    pub fn releasable(&self, number: u64) -> bool {
        self.0
            .lock()
            .held
            .first_key_value()
            .is_none_or(|(oldest, _)| number <= *oldest)
    }

    /// Records that the rows of the block committed as `number` are being released: pins taken
    /// before its commit are no longer intact.
    pub fn released(&self, number: u64) {
        let mut counts = self.0.lock();
        counts.released_through = counts.released_through.max(number);
    }

    /// Number of pins held.
    pub fn held(&self) -> usize {
        self.0.lock().held.values().sum()
    }
}

#[derive(Debug)]
struct Pin {
    pins: Arc<Pins>,
    commits: u64,
}

impl LivePin for Pin {
    fn intact(&self) -> bool {
        self.pins.0.lock().released_through <= self.commits
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut counts = self.pins.0.lock();
        if let Some(count) = counts.held.get_mut(&self.commits) {
            *count -= 1;
            if *count == 0 {
                counts.held.remove(&self.commits);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_kept_for_pins_taken_before_its_commit_only() {
        let pins = Arc::new(Pins::default());
        let before = pins.pin();
        let first = pins.committed();
        let after = pins.pin();
        let second = pins.committed();
        assert!(!pins.releasable(first), "`before` may not have listed it");
        drop(before);
        assert!(pins.releasable(first), "`after` listed it");
        assert!(!pins.releasable(second));
        assert_eq!(pins.held(), 1);
        pins.released(second);
        assert!(!after.intact(), "`after` may miss the second block's rows");
        drop(after);
        assert_eq!(pins.held(), 0);
        assert!(pins.pin().intact());
    }
}
