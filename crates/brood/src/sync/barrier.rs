//! `Barrier`: Python's `threading.Barrier` algorithm over a robust mutex
//! and a sequence word to sleep on.

use std::fmt;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::futex::{self, Deadline};
use super::mutex::{How, Outcome, RobustMutex};
use super::{broken_barrier_error, shared_serde};
use crate::error::{Error, Result};
use crate::shm::{Block, SharedState};

const FILLING: i32 = 0;
const DRAINING: i32 = 1;
const RESETTING: i32 = -1;
const BROKEN: i32 = -2;

/// `state`, `count` and `seq` change only under `mutex`.
#[repr(C)]
pub(crate) struct BarrierState {
    mutex: RobustMutex,
    parties: AtomicU32,
    state: AtomicI32,
    count: AtomicU32,
    seq: AtomicU32,
    /// The default timeout in nanoseconds, `u64::MAX` for none.
    timeout_ns: AtomicU64,
}

// SAFETY: repr(C); the mutex is set up by `init` before sharing; the rest
// are atomics.
unsafe impl SharedState for BarrierState {
    const MAGIC: u32 = u32::from_be_bytes(*b"BARR");
    fn must_stay_mapped(&self) -> bool {
        self.mutex.held_in_this_process()
    }
}

/// The barrier's mutex, held.
struct Held<'a> {
    s: &'a BarrierState,
}

impl<'a> Held<'a> {
    fn take(s: &'a BarrierState) -> Held<'a> {
        if let Outcome::Acquired { poisoned: true } = s.mutex.acquire(How::Block) {
            // A party died inside a (short) critical section: the counts
            // cannot be trusted, so the barrier breaks.
            s.state.store(BROKEN, Ordering::SeqCst);
            s.mutex.clear_poison();
            s.seq.fetch_add(1, Ordering::SeqCst);
            futex::wake(&s.seq, u32::MAX);
        }
        Held { s }
    }

    fn state(&self) -> i32 {
        self.s.state.load(Ordering::SeqCst)
    }

    fn set_state(&self, state: i32) {
        self.s.state.store(state, Ordering::SeqCst);
    }

    fn notify_all(&self) {
        self.s.seq.fetch_add(1, Ordering::SeqCst);
        futex::wake(&self.s.seq, u32::MAX);
    }

    /// Sleeps (without the mutex) until notified or the deadline; returns
    /// whether `until` holds afterwards.
    fn wait_until(&self, deadline: Deadline, until: impl Fn(&Held<'_>) -> bool) -> bool {
        loop {
            if until(self) {
                return true;
            }
            if deadline.expired() {
                return false;
            }
            let seq = self.s.seq.load(Ordering::SeqCst);
            let _ = self.s.mutex.release();
            futex::wait(&self.s.seq, seq, deadline);
            let again = Held::take(self.s);
            std::mem::forget(again);
        }
    }

    fn break_barrier(&self) {
        self.set_state(BROKEN);
        self.notify_all();
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = self.s.mutex.release();
    }
}

/// A process-shared barrier for a fixed number of parties (Python's
/// `multiprocessing.Barrier`): each `wait` blocks until `parties` processes
/// (or threads) wait, then all go on, each with its own index
/// (`0..parties`, in order of arrival).
///
/// A timeout that runs out *breaks* the barrier for everyone, as in
/// Python: waiters then get a broken-barrier error until [`reset`]. So a
/// party that dies before arriving breaks the barrier for the others as
/// soon as they wait with a timeout; after a party died *while waiting*,
/// make a new barrier (`reset` cannot count it out).
///
/// [`reset`]: Barrier::reset
///
/// ```
/// use brood::sync::Barrier;
/// use std::time::Duration;
///
/// let barrier = Barrier::new(2)?;
/// let mut child = brood::Process::with_args(
///     |b: Barrier| b.wait(Some(Duration::from_secs(10))).unwrap(),
///     barrier.clone(),
/// );
/// child.start()?;
/// let mine = barrier.wait(Some(Duration::from_secs(10)))?;
/// let theirs = child.join()?;
/// assert_eq!(mine + theirs, 1); // indices 0 and 1
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    block: Block<BarrierState>,
}

impl Barrier {
    /// A barrier for `parties` waiters, with no default timeout.
    ///
    /// ```
    /// assert_eq!(brood::sync::Barrier::new(3)?.parties(), 3);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new(parties: u32) -> Result<Barrier> {
        Barrier::build(parties, None)
    }

    /// A barrier whose `wait(None)` gives up (and breaks it) after
    /// `timeout` (Python's `Barrier(parties, timeout=...)`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = brood::sync::Barrier::with_timeout(2, Duration::from_millis(10))?;
    /// assert!(b.wait(None).is_err());
    /// assert!(b.broken());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn with_timeout(parties: u32, timeout: Duration) -> Result<Barrier> {
        Barrier::build(parties, Some(timeout))
    }

    fn build(parties: u32, timeout: Option<Duration>) -> Result<Barrier> {
        if parties == 0 {
            return Err(Error::invalid("a barrier needs at least one party"));
        }
        let ns = timeout.map_or(u64::MAX, |t| t.as_nanos().min(u64::MAX as u128 - 1) as u64);
        let block = Block::<BarrierState>::new_fresh(0, 1, |s| {
            RobustMutex::init_fresh(s.part(|s| &s.mutex), false)?;
            s.get().parties.store(parties, Ordering::Relaxed);
            s.get().timeout_ns.store(ns, Ordering::Relaxed);
            Ok(())
        })?;
        Ok(Barrier { block })
    }

    fn s(&self) -> &BarrierState {
        self.block.get()
    }

    /// Waits until all parties wait; returns this waiter's index in order of
    /// arrival (`parties - 1` for the one that released the others).
    /// `timeout` `None` uses the barrier's default. Fails with a
    /// broken-barrier error if the barrier is or becomes broken — by
    /// [`abort`](Barrier::abort), [`reset`](Barrier::reset), or a timeout
    /// (which breaks it for everyone).
    ///
    /// ```
    /// let b = brood::sync::Barrier::new(1)?;
    /// assert_eq!(b.wait(None)?, 0);
    /// assert_eq!(b.wait(None)?, 0); // reusable
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> Result<usize> {
        self.wait_inner(timeout, None::<fn()>)
    }

    /// Like [`wait`](Barrier::wait), and the party that trips the barrier
    /// (the last to arrive) runs `action` before any party is released
    /// (Python's `Barrier(parties, action=...)`: "called by one of the
    /// threads when released"). A closure cannot cross processes, so the
    /// action comes with the call rather than the barrier: give every party
    /// the same one. The other parties' actions are dropped unrun. If the
    /// action panics, the barrier breaks (the others get a broken-barrier
    /// error) and the panic goes on in the tripping party, as Python
    /// re-raises the action's exception.
    ///
    /// ```
    /// use brood::sync::Barrier;
    /// use brood::shm::Value;
    /// use std::time::Duration;
    ///
    /// let barrier = Barrier::new(2)?;
    /// let trips = Value::new(0u32)?;
    /// let mut child = brood::Process::with_args(
    ///     |(b, trips): (Barrier, Value<u32>)| {
    ///         b.wait_with(Some(Duration::from_secs(10)), || trips.set(trips.get().unwrap() + 1).unwrap())
    ///             .unwrap();
    ///         trips.get().unwrap() // the action ran before anyone went on
    ///     },
    ///     (barrier.clone(), trips.clone()),
    /// );
    /// child.start()?;
    /// barrier.wait_with(Some(Duration::from_secs(10)), || trips.set(trips.get().unwrap() + 1).unwrap())?;
    /// assert_eq!(trips.get()?, 1);
    /// assert_eq!(child.join()?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn wait_with(&self, timeout: Option<Duration>, action: impl FnOnce()) -> Result<usize> {
        self.wait_inner(timeout, Some(action))
    }

    fn wait_inner(
        &self,
        timeout: Option<Duration>,
        action: Option<impl FnOnce()>,
    ) -> Result<usize> {
        let s = self.s();
        let timeout = timeout.or_else(|| {
            let ns = s.timeout_ns.load(Ordering::Relaxed);
            (ns != u64::MAX).then(|| Duration::from_nanos(ns))
        });
        let deadline = Deadline::after(timeout);
        let held = Held::take(s);
        // Wait while the barrier drains or resets.
        if !held.wait_until(deadline, |h| !matches!(h.state(), DRAINING | RESETTING)) {
            held.break_barrier();
            return Err(broken_barrier_error());
        }
        if held.state() != FILLING {
            return Err(broken_barrier_error());
        }
        let index = s.count.load(Ordering::SeqCst);
        s.count.store(index + 1, Ordering::SeqCst);
        let mut panicked = None;
        let result = if index + 1 == s.parties.load(Ordering::Relaxed) {
            // The action runs with the barrier's mutex held, the others
            // asleep, as Python's runs inside its condition's lock.
            let ran = action.map_or(Ok(()), |action| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(action))
            });
            match ran {
                Ok(()) => {
                    held.set_state(DRAINING);
                    held.notify_all();
                    Ok(index as usize)
                }
                Err(payload) => {
                    held.break_barrier();
                    panicked = Some(payload);
                    Err(broken_barrier_error())
                }
            }
        } else if !held.wait_until(deadline, |h| h.state() != FILLING) {
            held.break_barrier();
            Err(broken_barrier_error())
        } else if held.state() < 0 {
            Err(broken_barrier_error())
        } else {
            Ok(index as usize)
        };
        // Leave; the last one out lets the next round in.
        let count = s.count.load(Ordering::SeqCst) - 1;
        s.count.store(count, Ordering::SeqCst);
        if count == 0 && matches!(held.state(), DRAINING | RESETTING) {
            held.set_state(FILLING);
            held.notify_all();
        }
        if let Some(payload) = panicked {
            drop(held);
            std::panic::resume_unwind(payload);
        }
        result
    }

    /// Puts the barrier back to its empty state; parties waiting now get a
    /// broken-barrier error (Python's `reset`).
    ///
    /// ```
    /// let b = brood::sync::Barrier::new(2)?;
    /// b.abort();
    /// assert!(b.broken());
    /// b.reset();
    /// assert!(!b.broken());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn reset(&self) {
        let held = Held::take(self.s());
        if self.s().count.load(Ordering::SeqCst) > 0 {
            if matches!(held.state(), FILLING | BROKEN) {
                held.set_state(RESETTING);
            }
        } else {
            held.set_state(FILLING);
        }
        held.notify_all();
    }

    /// Breaks the barrier: current and future waiters get a broken-barrier
    /// error until [`reset`](Barrier::reset) (Python's `abort`).
    ///
    /// ```
    /// let b = brood::sync::Barrier::new(2)?;
    /// b.abort();
    /// assert!(b.wait(None).is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn abort(&self) {
        Held::take(self.s()).break_barrier();
    }

    /// The number of parties.
    ///
    /// ```
    /// assert_eq!(brood::sync::Barrier::new(4)?.parties(), 4);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn parties(&self) -> usize {
        self.s().parties.load(Ordering::Relaxed) as usize
    }

    /// How many parties wait now (Python's `n_waiting`).
    ///
    /// ```
    /// assert_eq!(brood::sync::Barrier::new(2)?.n_waiting(), 0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn n_waiting(&self) -> usize {
        let held = Held::take(self.s());
        if held.state() == FILLING {
            self.s().count.load(Ordering::SeqCst) as usize
        } else {
            0
        }
    }

    /// Whether the barrier is broken.
    ///
    /// ```
    /// assert!(!brood::sync::Barrier::new(2)?.broken());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn broken(&self) -> bool {
        self.s().state.load(Ordering::SeqCst) == BROKEN
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("broken", &self.broken())
            .finish()
    }
}

shared_serde!(Barrier, BarrierState);
