//! A shared budget that concurrent work takes turns within: a number of units (bytes of text
//! being tokenized, or compiles running) that may be taken at once.

use std::sync::{Condvar, Mutex};

/// Units shared by concurrent work. [`Budget::take`] waits until its units fit beside what
/// is already taken, or nothing is (so work larger than the whole budget runs alone); the
/// returned guard gives them back when dropped, also on a panic.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    taken: Mutex<usize>,
    freed: Condvar,
}

impl Budget {
    /// A budget of `limit` units.
    pub(crate) fn new(limit: usize) -> Budget {
        Budget {
            limit,
            taken: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Takes `units`, waiting for them to fit.
    pub(crate) fn take(&self, units: usize) -> Turn<'_> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        while *taken > 0 && *taken + units > self.limit {
            taken = self.freed.wait(taken).unwrap_or_else(|e| e.into_inner());
        }
        *taken += units;
        Turn {
            budget: self,
            units,
        }
    }
}

/// Units taken from a [`Budget`], given back on drop.
#[derive(Debug)]
pub(crate) struct Turn<'a> {
    budget: &'a Budget,
    units: usize,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut taken = self.budget.taken.lock().unwrap_or_else(|e| e.into_inner());
        *taken -= self.units;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn work_waits_until_its_units_fit() {
        let budget = Budget::new(10);
        let a = budget.take(6);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _b = budget.take(6);
                tx.send(()).unwrap();
            });
            assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
            drop(a);
            rx.recv_timeout(Duration::from_secs(30)).unwrap();
        });
    }

    #[test]
    fn work_larger_than_the_budget_runs_alone() {
        let budget = Budget::new(10);
        drop(budget.take(100));
        let _small = budget.take(3);
        let _more = budget.take(7);
    }
}
