//! Sandbox slots: at most `max_sandboxes` kernels exist (alive or starting); each holds a slot, whose index also
//! picks the sandbox's uid.

use std::sync::{Arc, Mutex};

/// The free slots, shared by every `Slot`.
#[derive(Clone)]
pub(super) struct Slots {
    free: Arc<Mutex<Vec<usize>>>,
    max: usize,
}

impl Slots {
    /// `max` slots, all free.
    pub(super) fn new(max: usize) -> Slots {
        Slots { free: Arc::new(Mutex::new((0..max).rev().collect())), max }
    }

    /// Takes a free slot, if any.
    pub(super) fn take(&self) -> Option<Slot> {
        let index = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        Some(Slot { index, free: self.free.clone() })
    }

    /// Slots in use.
    pub(super) fn in_use(&self) -> usize {
        self.max - self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One taken slot; dropping it frees it.
pub(super) struct Slot {
    index: usize,
    free: Arc<Mutex<Vec<usize>>>,
}

impl Slot {
    /// The slot's index, `0..max`.
    pub(super) fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots are exclusive, bounded, and come back when dropped.
    #[test]
    fn slots_are_bounded_and_returned() {
        let slots = Slots::new(2);
        let a = slots.take().unwrap();
        let b = slots.take().unwrap();
        assert_ne!(a.index(), b.index());
        assert!(slots.take().is_none());
        assert_eq!(slots.in_use(), 2);
        drop(a);
        assert_eq!(slots.in_use(), 1);
        assert!(slots.take().is_some());
    }
}
