//! brood's robust lock word, both ways it runs: a child SIGKILLed while it
//! holds the lock of any primitive that has one (`Lock`, `RLock`,
//! `Condition`, `Value`, `Array`; `Barrier` keeps its own) is reported to
//! the next acquirer as `OwnerDied` — on the fast path (brood's own
//! robust-list link, checked against glibc's layout at run time), on the
//! pthread fallback (forced here as when that check fails), and with the
//! holder and the acquirer on different paths (they share one protocol).
//! `Semaphore` and `Event` have no owner to report.
//!
//! Every wait is bounded; the time to hear of a death is checked only as a
//! generous "does not hang" bound.

#[macro_use]
mod common;

use common::builder;

use std::thread;
use std::time::{Duration, Instant};

use brood::shm::{Array, Value};
use brood::sync::{Barrier, Condition, Event, Lock, RLock, TryLockError};
use brood::{Process, StartMethod};
use serde::Serialize;
use serde::de::DeserializeOwned;

const LONG: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    /// brood's own word, linked onto glibc's robust list.
    Fast,
    /// `pthread_mutex_lock` on the same memory.
    Fallback,
}

/// Puts the calling thread on `path`, and checks that it took.
fn take(path: Path) {
    brood::sync::__force_pthread_fallback(path == Path::Fallback);
    assert_eq!(
        brood::sync::__fast_path_active(),
        path == Path::Fast,
        "this thread runs the {path:?} path"
    );
}

/// A primitive with a lock that a holder can die holding.
trait Guarded: Serialize + DeserializeOwned + Clone + Send + 'static {
    fn make() -> Self;
    /// Takes the lock and keeps it (as a holder about to die does).
    fn hold(&self);
    /// Acquires (waiting at most `LONG`); whether it heard of the death.
    /// Leaves the lock held.
    fn acquire_hears_of_death(&self) -> bool;
    /// After `acquire_hears_of_death`: the state the dead holder left, a
    /// release, and the poison until cleared.
    fn recover(&self);
}

impl Guarded for Lock {
    fn make() -> Self {
        Lock::new().unwrap()
    }
    fn hold(&self) {
        std::mem::forget(self.lock().unwrap());
    }
    fn acquire_hears_of_death(&self) -> bool {
        match self.lock_timeout(LONG) {
            Err(TryLockError::OwnerDied(died)) => {
                std::mem::forget(died.into_inner());
                true
            }
            Ok(g) => {
                std::mem::forget(g);
                false
            }
            Err(TryLockError::WouldBlock) => panic!("the lock stayed held"),
        }
    }
    fn recover(&self) {
        assert!(self.is_owned());
        self.release().unwrap();
        assert!(self.is_poisoned());
        assert!(matches!(self.try_lock(), Err(TryLockError::OwnerDied(_))));
        self.clear_poison();
        assert!(self.try_lock().is_ok());
    }
}

impl Guarded for RLock {
    fn make() -> Self {
        RLock::new().unwrap()
    }
    fn hold(&self) {
        std::mem::forget(self.lock().unwrap());
        std::mem::forget(self.lock().unwrap());
        assert_eq!(self.recursion_count(), 2);
    }
    fn acquire_hears_of_death(&self) -> bool {
        let died = self.acquire(true, Some(LONG)).is_err();
        assert!(self.is_owned());
        died
    }
    fn recover(&self) {
        // The dead holder's two levels are gone: one release frees it.
        assert_eq!(self.recursion_count(), 1);
        self.release().unwrap();
        assert_eq!(self.recursion_count(), 0);
        self.clear_poison();
        let _a = self.lock().unwrap();
        let _b = self.lock().unwrap();
    }
}

impl Guarded for Condition {
    fn make() -> Self {
        Condition::new().unwrap()
    }
    fn hold(&self) {
        std::mem::forget(self.lock().unwrap());
    }
    fn acquire_hears_of_death(&self) -> bool {
        let died = self.acquire(true, Some(LONG)).is_err();
        assert!(self.is_owned());
        died
    }
    fn recover(&self) {
        // Waiting with a poisoned lock reports it again (and keeps it).
        assert!(self.wait(Some(Duration::from_millis(1))).is_err());
        self.clear_poison();
        assert!(!self.wait(Some(Duration::from_millis(1))).unwrap());
        self.release().unwrap();
    }
}

impl Guarded for Value<u32> {
    fn make() -> Self {
        Value::new(0).unwrap()
    }
    fn hold(&self) {
        let mut g = self.lock().unwrap();
        *g = 41; // half-way through an update
        std::mem::forget(g);
    }
    fn acquire_hears_of_death(&self) -> bool {
        match self.lock() {
            Err(died) => {
                assert_eq!(**died.get_ref(), 41);
                std::mem::forget(died.into_inner());
                true
            }
            Ok(g) => {
                std::mem::forget(g);
                false
            }
        }
    }
    fn recover(&self) {
        self.get_lock().release().unwrap();
        assert_eq!(self.get().unwrap_err().kind(), brood::ErrorKind::OwnerDied);
        self.get_lock().clear_poison();
        self.set(42).unwrap();
        assert_eq!(self.get().unwrap(), 42);
    }
}

impl Guarded for Array<u8> {
    fn make() -> Self {
        Array::zeroed(4).unwrap()
    }
    fn hold(&self) {
        let mut g = self.lock().unwrap();
        g[..2].copy_from_slice(&[7, 7]);
        std::mem::forget(g);
    }
    fn acquire_hears_of_death(&self) -> bool {
        match self.lock() {
            Err(died) => {
                assert_eq!(&died.get_ref()[..], &[7, 7, 0, 0]);
                std::mem::forget(died.into_inner());
                true
            }
            Ok(g) => {
                std::mem::forget(g);
                false
            }
        }
    }
    fn recover(&self) {
        self.get_lock().release().unwrap();
        assert!(self.get(0).is_err());
        self.get_lock().clear_poison();
        assert_eq!(self.to_vec().unwrap(), [7, 7, 0, 0]);
    }
}

/// The holder: takes `path`, takes the lock, says so, and waits for SIGKILL.
fn hold_until_killed<P: Guarded>((p, held, fallback): (P, Event, bool)) {
    take(if fallback { Path::Fallback } else { Path::Fast });
    p.hold();
    held.set();
    thread::sleep(LONG);
}

/// A child holding `P`'s lock on `holder`'s path is SIGKILLed; one acquirer
/// on `acquirer`'s path is already blocked then (`blocked`), or comes after.
fn killed_holder<P: Guarded>(m: StartMethod, holder: Path, acquirer: Path, blocked: bool) {
    take(acquirer);
    let p = P::make();
    let held = Event::new().unwrap();
    let mut child = builder(m).target_with(
        hold_until_killed::<P>,
        (p.clone(), held.clone(), holder == Path::Fallback),
    );
    child.start().unwrap();
    assert!(held.wait(Some(LONG)), "the child took the lock");
    let acquire = {
        let p = p.clone();
        move || {
            take(acquirer);
            let t = Instant::now();
            let died = p.acquire_hears_of_death();
            (died, t.elapsed(), p)
        }
    };
    let (died, took) = if blocked {
        let waiter = thread::spawn(acquire);
        thread::sleep(Duration::from_millis(50));
        child.kill().unwrap();
        let (died, took, p) = waiter.join().unwrap();
        // The waiter thread left the lock held; it is gone, and so the
        // kernel marked the lock again: report and take it here.
        assert!(p.acquire_hears_of_death());
        (died, took)
    } else {
        child.kill().unwrap();
        let _ = child.join_timeout(LONG);
        let (died, took, _) = acquire();
        (died, took)
    };
    assert!(
        died,
        "the acquirer ({acquirer:?}) hears that the holder ({holder:?}) died"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    if blocked {
        assert_eq!(child.join_timeout(LONG).unwrap_err().signal(), Some(9));
    }
    p.recover();
}

// The fast path, every primitive with an owner.
fn lock_fast(m: StartMethod) {
    killed_holder::<Lock>(m, Path::Fast, Path::Fast, false);
}
fn lock_fast_blocked(m: StartMethod) {
    killed_holder::<Lock>(m, Path::Fast, Path::Fast, true);
}
fn rlock_fast(m: StartMethod) {
    killed_holder::<RLock>(m, Path::Fast, Path::Fast, false);
}
fn condition_fast(m: StartMethod) {
    killed_holder::<Condition>(m, Path::Fast, Path::Fast, true);
}
fn value_fast(m: StartMethod) {
    killed_holder::<Value<u32>>(m, Path::Fast, Path::Fast, true);
}
fn array_fast(m: StartMethod) {
    killed_holder::<Array<u8>>(m, Path::Fast, Path::Fast, false);
}

// The pthread fallback (what runs when glibc's layout fails the check).
fn lock_fallback(m: StartMethod) {
    killed_holder::<Lock>(m, Path::Fallback, Path::Fallback, false);
}
fn lock_fallback_blocked(m: StartMethod) {
    killed_holder::<Lock>(m, Path::Fallback, Path::Fallback, true);
}
fn rlock_fallback(m: StartMethod) {
    killed_holder::<RLock>(m, Path::Fallback, Path::Fallback, false);
}
fn condition_fallback(m: StartMethod) {
    killed_holder::<Condition>(m, Path::Fallback, Path::Fallback, true);
}
fn value_fallback(m: StartMethod) {
    killed_holder::<Value<u32>>(m, Path::Fallback, Path::Fallback, true);
}
fn array_fallback(m: StartMethod) {
    killed_holder::<Array<u8>>(m, Path::Fallback, Path::Fallback, false);
}

// One path dies, the other hears of it.
fn fast_holder_fallback_acquirer(m: StartMethod) {
    killed_holder::<Lock>(m, Path::Fast, Path::Fallback, true);
}
fn fallback_holder_fast_acquirer(m: StartMethod) {
    killed_holder::<RLock>(m, Path::Fallback, Path::Fast, true);
}

/// Barrier: a party killed while waiting (it took the barrier's mutex on
/// its path to arrive) leaves the barrier one short: the others' timeout
/// breaks it for everyone. (The mutex is held only inside short critical
/// sections; a party that dies in one poisons it, which breaks the barrier
/// too.)
fn barrier_party_killed(m: StartMethod, path: Path) {
    take(path);
    let b = Barrier::new(4).unwrap();
    let mut waiter = builder(m).target_with(
        |(b, fallback): (Barrier, bool)| {
            take(if fallback { Path::Fallback } else { Path::Fast });
            b.wait(Some(LONG)).is_err()
        },
        (b.clone(), path == Path::Fallback),
    );
    let mut doomed = builder(m).target_with(
        |(b, fallback): (Barrier, bool)| {
            take(if fallback { Path::Fallback } else { Path::Fast });
            let _ = b.wait(Some(LONG));
        },
        (b.clone(), path == Path::Fallback),
    );
    waiter.start().unwrap();
    doomed.start().unwrap();
    let deadline = Instant::now() + LONG;
    while b.n_waiting() < 2 {
        assert!(Instant::now() < deadline, "two parties wait");
        thread::sleep(Duration::from_millis(2));
    }
    doomed.kill().unwrap();
    let _ = doomed.join_timeout(LONG);
    assert!(b.wait(Some(Duration::from_millis(200))).is_err());
    assert!(b.broken());
    assert!(
        waiter.join_timeout(LONG).unwrap(),
        "the other party sees it"
    );
}
fn barrier_fast(m: StartMethod) {
    barrier_party_killed(m, Path::Fast);
}
fn barrier_fallback(m: StartMethod) {
    barrier_party_killed(m, Path::Fallback);
}

suite!(
    lock_fast,
    lock_fast_blocked,
    rlock_fast,
    condition_fast,
    value_fast,
    array_fast,
    lock_fallback,
    lock_fallback_blocked,
    rlock_fallback,
    condition_fallback,
    value_fallback,
    array_fallback,
    fast_holder_fallback_acquirer,
    fallback_holder_fast_acquirer,
    barrier_fast,
    barrier_fallback,
);

/// Both paths exclude each other: two forked children, one on each path,
/// add to one `Value` under its lock.
#[test]
fn the_two_paths_exclude_each_other() {
    common::allow_fork();
    take(Path::Fast);
    let v = Value::new(0u64).unwrap();
    let kids: Vec<_> = [Path::Fast, Path::Fallback]
        .into_iter()
        .map(|path| {
            let v = v.clone();
            let mut child = Process::fork(move || {
                take(path);
                for _ in 0..20_000 {
                    *v.lock().unwrap() += 1;
                }
            });
            child.start().unwrap();
            child
        })
        .collect();
    for mut k in kids {
        k.join_timeout(LONG).unwrap();
    }
    assert_eq!(v.get().unwrap(), 40_000);
}

/// A child forked while its parent holds a lock on the fast path takes its
/// own TID: it does not own the parent's lock, and a lock it takes and dies
/// holding is reported.
#[test]
fn a_forked_child_refreshes_its_thread_id() {
    common::allow_fork();
    take(Path::Fast);
    let parents = Lock::new().unwrap();
    let childs = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let _g = parents.lock().unwrap();
    let mut child = Process::fork({
        let (parents, childs, held) = (parents.clone(), childs.clone(), held.clone());
        move || {
            assert!(brood::sync::__fast_path_active());
            assert!(!parents.is_owned(), "the parent's lock is not the child's");
            assert!(matches!(parents.try_lock(), Err(TryLockError::WouldBlock)));
            std::mem::forget(childs.lock().unwrap());
            assert!(childs.is_owned());
            held.set();
            thread::sleep(LONG);
        }
    });
    child.start().unwrap();
    assert!(held.wait(Some(LONG)));
    child.kill().unwrap();
    let _ = child.join_timeout(LONG);
    assert!(matches!(
        childs.lock_timeout(LONG),
        Err(TryLockError::OwnerDied(_))
    ));
    assert!(parents.is_owned());
}

/// Whether `lock`'s next taker hears of a dead holder (waiting at most
/// `LONG`); leaves it released and, after a death, cleared.
fn reports_death(lock: &Lock) -> bool {
    match lock.lock_timeout(LONG) {
        Ok(_) => false,
        Err(TryLockError::OwnerDied(g)) => {
            drop(g);
            lock.clear_poison();
            true
        }
        Err(TryLockError::WouldBlock) => panic!("the lock stayed held"),
    }
}

/// The fast path keeps the one lock a thread holds off the robust list,
/// parked in `list_op_pending`, and links it onto the list only when a
/// second one is taken: a child killed holding two locks, or one taken
/// after the other was released (each order), has every held one reported,
/// and none of those it released.
#[test]
fn a_child_killed_holding_two_locks_then_one_has_each_reported() {
    common::allow_fork();
    take(Path::Fast);
    // (locks taken in order, the indices released before the kill)
    let cases: [(usize, &[usize]); 4] = [(2, &[]), (3, &[1]), (2, &[0]), (2, &[1])];
    for (n, released) in cases {
        let locks: Vec<Lock> = (0..n).map(|_| Lock::new().unwrap()).collect();
        let held = Event::new().unwrap();
        let mut child = Process::fork({
            let (locks, held) = (locks.clone(), held.clone());
            let released = released.to_vec();
            move || {
                assert!(brood::sync::__fast_path_active());
                let guards: Vec<_> = locks.iter().map(|l| Some(l.lock().unwrap())).collect();
                let mut guards = guards;
                for i in released {
                    drop(guards[i].take());
                }
                std::mem::forget(guards);
                held.set();
                thread::sleep(LONG);
            }
        });
        child.start().unwrap();
        assert!(held.wait(Some(LONG)), "the child took its locks");
        child.kill().unwrap();
        let _ = child.join_timeout(LONG);
        for (i, lock) in locks.iter().enumerate() {
            assert_eq!(
                reports_death(lock),
                !released.contains(&i),
                "lock {i} of {n}, {released:?} released"
            );
        }
    }
}

/// A lock held while the same thread waits on a condition (whose own lock
/// the wait releases and takes back) is reported when the waiter is
/// killed; the condition's lock, released by the wait, is not.
#[test]
fn a_lock_held_while_a_condition_waits_is_reported() {
    common::allow_fork();
    take(Path::Fast);
    let lock = Lock::new().unwrap();
    let cond = Condition::new().unwrap();
    let mut child = Process::fork({
        let (lock, cond) = (lock.clone(), cond.clone());
        move || {
            std::mem::forget(lock.lock().unwrap());
            let _g = cond.lock().unwrap();
            let _ = cond.wait(Some(LONG));
        }
    });
    child.start().unwrap();
    // The condition's lock comes free once the child waits.
    let t = Instant::now();
    while !lock.locked() || cond.try_lock().is_err() {
        assert!(t.elapsed() < LONG, "the child waits");
        thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    let _ = child.join_timeout(LONG);
    assert!(reports_death(&lock));
    assert!(cond.lock().is_ok(), "the condition's lock was released");
}

/// A thread that holds a lock parked and forks: the child owns nothing of
/// its parent's (it forgets the parked lock and clears the
/// `list_op_pending` it inherited), a lock it dies holding is reported, and
/// the parent's parked lock keeps its report: the thread that holds it
/// exits (not killed: the kernel handles its robust list on every thread
/// exit) and the next taker hears of it.
#[test]
fn a_parked_lock_survives_a_fork_and_a_thread_exit_reports_it() {
    common::allow_fork();
    let parents = Lock::new().unwrap();
    let childs = Lock::new().unwrap();
    let holder = thread::spawn({
        let (parents, childs) = (parents.clone(), childs.clone());
        move || {
            take(Path::Fast);
            std::mem::forget(parents.lock().unwrap());
            let mut child = Process::fork({
                let (parents, childs) = (parents.clone(), childs.clone());
                move || {
                    assert!(!parents.is_owned());
                    assert!(matches!(parents.try_lock(), Err(TryLockError::WouldBlock)));
                    // Takes one and returns holding it: the process exits.
                    std::mem::forget(childs.lock().unwrap());
                }
            });
            child.start().unwrap();
            child.join_timeout(LONG).unwrap();
            assert!(parents.is_owned(), "still this thread's");
        }
    });
    holder.join().unwrap();
    assert!(reports_death(&childs), "the child's lock");
    assert!(reports_death(&parents), "the parent thread's parked lock");
}

/// An `RLock` taken several levels deep stays parked (a relock does not
/// touch the list): a holder killed at depth 3 is reported, and the next
/// taker starts at depth 1.
#[test]
fn a_deep_rlock_holder_killed_is_reported() {
    common::allow_fork();
    take(Path::Fast);
    let r = RLock::new().unwrap();
    let held = Event::new().unwrap();
    let mut child = Process::fork({
        let (r, held) = (r.clone(), held.clone());
        move || {
            for _ in 0..3 {
                std::mem::forget(r.lock().unwrap());
            }
            assert_eq!(r.recursion_count(), 3);
            held.set();
            thread::sleep(LONG);
        }
    });
    child.start().unwrap();
    assert!(held.wait(Some(LONG)));
    child.kill().unwrap();
    let _ = child.join_timeout(LONG);
    match r.lock_timeout(LONG) {
        Err(TryLockError::OwnerDied(g)) => {
            assert_eq!(r.recursion_count(), 1);
            drop(g);
        }
        other => panic!("expected OwnerDied, got {:?}", other.is_ok()),
    }
    assert!(!r.locked());
}
