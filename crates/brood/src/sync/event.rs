//! `Event`: a flag and a generation in one futex word.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::futex::{self, Deadline};
use super::shared_serde;
use crate::error::Result;
use crate::shm::{Block, SharedState};

const SET: u32 = 1;
const GENERATION: u32 = 2;

/// Bit 0 is the flag; the bits above count the `set` calls that found it
/// clear, so a waiter that sleeps through a `set` quickly followed by a
/// `clear` still sees that it was set.
#[repr(C)]
pub(crate) struct EventState {
    word: AtomicU32,
    waiters: AtomicU32,
}

// SAFETY: repr(C), atomics only, zero is "clear".
unsafe impl SharedState for EventState {
    const MAGIC: u32 = u32::from_be_bytes(*b"EVNT");
}

/// A process-shared flag that processes wait for (Python's
/// `multiprocessing.Event`).
///
/// ```
/// use brood::sync::Event;
/// use std::time::Duration;
///
/// let go = Event::new()?;
/// let mut child = brood::Process::with_args(|go: Event| go.set(), go.clone());
/// child.start()?;
/// assert!(go.wait(Some(Duration::from_secs(10))));
/// child.join()?;
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    block: Block<EventState>,
}

impl Event {
    /// A new event, not set.
    ///
    /// ```
    /// assert!(!brood::sync::Event::new()?.is_set());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new() -> Result<Event> {
        Ok(Event {
            block: Block::new(0, 1, |_| Ok(()))?,
        })
    }

    /// Whether the flag is set.
    ///
    /// ```
    /// let e = brood::sync::Event::new()?;
    /// e.set();
    /// assert!(e.is_set());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_set(&self) -> bool {
        self.state().word.load(Ordering::SeqCst) & SET != 0
    }

    /// Sets the flag and wakes every waiter.
    ///
    /// ```
    /// let e = brood::sync::Event::new()?;
    /// e.set();
    /// assert!(e.wait(None));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn set(&self) {
        let s = self.state();
        let mut w = s.word.load(Ordering::SeqCst);
        loop {
            if w & SET != 0 {
                return;
            }
            let next = (w & !SET).wrapping_add(GENERATION) | SET;
            match s
                .word
                .compare_exchange(w, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        if s.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(&s.word, u32::MAX);
        }
    }

    /// Clears the flag.
    ///
    /// ```
    /// let e = brood::sync::Event::new()?;
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn clear(&self) {
        self.state().word.fetch_and(!SET, Ordering::SeqCst);
    }

    /// Waits until the flag is set, at most `timeout` (`None`: no limit).
    /// Returns `true` if it was set (even if cleared again since), `false`
    /// when the timeout ran out — Python's `Event.wait`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = brood::sync::Event::new()?;
    /// assert!(!e.wait(Some(Duration::from_millis(10))));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let s = self.state();
        let deadline = Deadline::after(timeout);
        let start = s.word.load(Ordering::SeqCst);
        if start & SET != 0 {
            return true;
        }
        loop {
            let w = s.word.load(Ordering::SeqCst);
            if w & SET != 0 || (w & !SET) != (start & !SET) {
                return true;
            }
            if deadline.expired() {
                return false;
            }
            s.waiters.fetch_add(1, Ordering::SeqCst);
            futex::wait(&s.word, w, deadline);
            s.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn state(&self) -> &EventState {
        self.block.get()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

shared_serde!(Event, EventState);
