//! Process-shared synchronization: Python's semantics, ported from CPython's
//! `Lib/test/_test_multiprocessing.py` (`_TestLock`, `_TestSemaphore`,
//! `_TestCondition`, `_TestEvent`, `_TestBarrier`), between threads and
//! between processes of every start method; and what Python lacks: a holder
//! killed with SIGKILL is reported to the next acquirer, never a deadlock.
//!
//! Every wait is bounded; timings are only checked as generous "returns in
//! time / does not hang" bounds.

#[macro_use]
mod common;

use common::{builder, returns_in_time};

use std::thread;
use std::time::{Duration, Instant};

use brood::shm::{RawValue, Value};
use brood::sync::{
    Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, TryLockError,
};
use brood::{Process, StartMethod};

const LONG: Duration = Duration::from_secs(10);

/// Polls `f` until it is true, for at most 10 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------------------
// Lock and RLock (CPython: _TestLock).

#[test]
fn lock_python_semantics() {
    let lock = Lock::new().unwrap();
    assert!(lock.acquire(true, None).unwrap());
    assert!(!lock.acquire(false, None).unwrap());
    assert!(lock.is_owned());
    lock.release().unwrap();
    assert!(
        lock.release().is_err(),
        "releasing an unlocked Lock is an error"
    );
    // The guard form (Python's `with lock:`).
    {
        let _g = lock.lock().unwrap();
        assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
    }
    assert!(lock.try_lock().is_ok());
}

#[test]
fn lock_belongs_to_the_acquiring_thread() {
    let lock = Lock::new().unwrap();
    assert!(lock.acquire(true, None).unwrap());
    let other = lock.clone();
    thread::spawn(move || {
        assert!(other.release().is_err());
        assert!(!other.is_owned());
        assert!(
            !other
                .acquire(true, Some(Duration::from_millis(20)))
                .unwrap()
        );
    })
    .join()
    .unwrap();
    lock.release().unwrap();
}

#[test]
fn relocking_a_lock_panics_instead_of_deadlocking() {
    let lock = Lock::new().unwrap();
    let _held = lock.lock().unwrap();
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _twice = lock.lock();
    }));
    assert!(again.is_err());
    // Timed and non-blocking attempts just fail.
    assert!(lock.lock_timeout(Duration::from_millis(10)).is_err());
    assert!(!lock.acquire(true, Some(Duration::from_millis(10))).unwrap());
}

#[test]
fn dropping_a_lock_this_thread_holds_is_safe() {
    // libc's robust list still names the mutex: its memory must stay mapped
    // while other robust mutexes come and go on the same list (glibc walks
    // the list through it; unmapped, that walk faults). Run in a child, so
    // a fault is reported as the child's signal rather than killing the
    // test binary, and the thread exits (the kernel walks the list then).
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .target(|| -> Vec<bool> {
            thread::spawn(|| {
                let mut seen = Vec::new();
                let lock = Lock::new().unwrap();
                seen.push(lock.acquire(true, None).unwrap());
                drop(lock);
                // Fresh mappings, likely where the lock was had it been
                // unmapped, filled with a pattern: taking another robust
                // mutex links it in front of the dropped one (glibc writes
                // into the dropped one's list node), which must land in
                // the lock's kept memory, never in these.
                let pages: Vec<_> = (0..4)
                    .map(|_| {
                        let shm = brood::shm::SharedMemory::create(None, 4096).unwrap();
                        shm.write_at(0, &[0xAB; 4096]).unwrap();
                        shm
                    })
                    .collect();
                let another = Lock::new().unwrap();
                seen.push(another.acquire(true, None).unwrap());
                another.release().unwrap();
                for shm in &pages {
                    let mut buf = [0u8; 4096];
                    shm.read_at(0, &mut buf).unwrap();
                    seen.push(buf.iter().all(|&b| b == 0xAB));
                }
                for _ in 0..3 {
                    let other = RLock::new().unwrap();
                    let a = other.lock().unwrap();
                    let b = other.lock().unwrap();
                    drop(a);
                    drop(b);
                    // Released twice over: free for a non-blocking take.
                    seen.push(other.acquire(false, None).unwrap());
                    other.release().unwrap();
                    let fresh = Lock::new().unwrap();
                    seen.push(fresh.acquire(false, None).unwrap());
                    seen.push(!fresh.acquire(false, None).unwrap());
                    fresh.release().unwrap();
                }
                seen
            })
            .join()
            .unwrap()
        });
    p.start().unwrap();
    let seen = p.join_timeout(LONG).unwrap();
    assert_eq!(seen, vec![true; 15]);
}

#[test]
fn a_forked_child_does_not_own_its_parents_lock() {
    common::allow_fork();
    let lock = Lock::new().unwrap();
    let _held = lock.lock().unwrap();
    assert!(lock.is_owned());
    let theirs = lock.clone();
    let mut child = Process::fork(move || {
        (
            theirs.is_owned(),
            theirs.release().is_err(),
            theirs.try_lock().is_err(),
        )
    });
    child.start().unwrap();
    assert_eq!(child.join_timeout(LONG).unwrap(), (false, true, true));
    assert!(lock.is_owned());
}

#[test]
fn rlock_python_semantics() {
    let lock = RLock::new().unwrap();
    for _ in 0..3 {
        assert!(lock.acquire(true, None).unwrap());
    }
    assert_eq!(lock.recursion_count(), 3);
    for _ in 0..3 {
        lock.release().unwrap();
    }
    assert!(lock.release().is_err());
    assert_eq!(lock.recursion_count(), 0);
}

#[test]
fn rlock_release_by_a_non_owner_is_an_error() {
    let lock = RLock::new().unwrap();
    let _g = lock.lock().unwrap();
    let other = lock.clone();
    thread::spawn(move || {
        assert!(other.release().is_err());
        assert_eq!(other.recursion_count(), 0);
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
    })
    .join()
    .unwrap();
    assert_eq!(lock.recursion_count(), 1);
}

#[test]
fn a_panicking_holder_poisons_until_cleared() {
    let lock = Lock::new().unwrap();
    let l2 = lock.clone();
    let _ = thread::spawn(move || {
        let _g = l2.lock().unwrap();
        panic!("dies holding the lock");
    })
    .join();
    assert!(lock.is_poisoned());
    let g = lock.lock().unwrap_err().into_inner();
    drop(g);
    // Still poisoned: every acquirer is told until someone says otherwise.
    assert!(lock.lock().is_err());
    lock.clear_poison();
    assert!(lock.lock().is_ok());
}

fn lock_excludes_processes(m: StartMethod) {
    let lock = Lock::new().unwrap();
    let total = RawValue::new(0u64).unwrap();
    let mut kids: Vec<_> = (0..4)
        .map(|_| {
            builder(m).target_with(
                |(lock, total): (Lock, RawValue<u64>)| {
                    for _ in 0..200 {
                        let _g = lock.lock().unwrap();
                        // A read-modify-write that only the lock makes safe.
                        let v = total.get();
                        std::hint::spin_loop();
                        total.set(v + 1);
                    }
                },
                (lock.clone(), total.clone()),
            )
        })
        .collect();
    for k in &mut kids {
        k.start().unwrap();
    }
    for k in &mut kids {
        k.join_timeout(LONG).unwrap();
    }
    assert_eq!(total.get(), 800);
}

fn lock_timeout_returns_in_time_while_another_process_holds_it(m: StartMethod) {
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let go = Event::new().unwrap();
    let mut child = builder(m).target_with(
        |(lock, held, go): (Lock, Event, Event)| {
            let _g = lock.lock().unwrap();
            held.set();
            go.wait(Some(LONG))
        },
        (lock.clone(), held.clone(), go.clone()),
    );
    child.start().unwrap();
    assert!(held.wait(Some(LONG)));
    assert!(!lock.acquire(false, None).unwrap());
    let got = returns_in_time(Duration::from_millis(100), || {
        lock.lock_timeout(Duration::from_millis(100))
    });
    assert!(matches!(got, Err(TryLockError::WouldBlock)));
    assert!(!returns_in_time(Duration::from_millis(50), || {
        lock.acquire(true, Some(Duration::from_millis(50))).unwrap()
    }));
    go.set();
    assert!(lock.lock_timeout(LONG).is_ok());
    assert!(child.join_timeout(LONG).unwrap());
}

fn rlock_is_owned_by_the_holding_process_only(m: StartMethod) {
    let lock = RLock::new().unwrap();
    let held = Event::new().unwrap();
    let go = Event::new().unwrap();
    let mut child = builder(m).target_with(
        |(lock, held, go): (RLock, Event, Event)| {
            let _a = lock.lock().unwrap();
            let _b = lock.lock().unwrap();
            held.set();
            go.wait(Some(LONG));
            lock.recursion_count()
        },
        (lock.clone(), held.clone(), go.clone()),
    );
    child.start().unwrap();
    assert!(held.wait(Some(LONG)));
    assert!(lock.release().is_err(), "a non-owner cannot release");
    assert!(!lock.is_owned());
    assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
    go.set();
    assert_eq!(child.join_timeout(LONG).unwrap(), 2);
    assert!(lock.try_lock().is_ok());
}

// ---------------------------------------------------------------------------
// Holder death: SIGKILL (what Python's locks cannot survive).

fn killed_lock_holder_is_reported_to_a_blocked_acquirer(m: StartMethod) {
    let data = Value::new(0u32).unwrap();
    let held = Event::new().unwrap();
    let mut child = builder(m).target_with(
        |(data, held): (Value<u32>, Event)| {
            let mut g = data.lock().unwrap();
            *g = 41; // half-way through an update...
            held.set();
            thread::sleep(LONG); // ...when SIGKILL comes
        },
        (data.clone(), held.clone()),
    );
    child.start().unwrap();
    assert!(held.wait(Some(LONG)));
    // A waiter is already blocked when the holder dies.
    let waiter = {
        let data = data.clone();
        thread::spawn(move || {
            let t = Instant::now();
            let got = data.get_lock().lock_timeout(LONG).map(|_| ());
            (matches!(got, Err(TryLockError::OwnerDied(_))), t.elapsed())
        })
    };
    thread::sleep(Duration::from_millis(50));
    child.kill().unwrap();
    assert_eq!(child.join_timeout(LONG).unwrap_err().signal(), Some(9));
    let (owner_died, took) = waiter.join().unwrap();
    assert!(
        owner_died,
        "the blocked acquirer must hear that the holder died"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The data is still there, and the lock works once marked consistent.
    let g = data.lock().unwrap_err().into_inner();
    assert_eq!(*g, 41);
    drop(g);
    assert_eq!(
        data.get().unwrap_err().kind(),
        brood::ErrorKind::OwnerDied,
        "poisoned until cleared"
    );
    data.get_lock().clear_poison();
    data.set(42).unwrap();
    assert_eq!(data.get().unwrap(), 42);
}

/// Runs `hold((primitive, held))` in a child, waits until it sets `held`
/// (it then holds the primitive's lock), and SIGKILLs it there.
fn kill_once_held<F, P>(m: StartMethod, hold: F, primitive: P)
where
    F: FnOnce((P, Event)) + Send + 'static,
    P: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    let held = Event::new().unwrap();
    let mut child = builder(m).target_with(hold, (primitive, held.clone()));
    child.start().unwrap();
    assert!(held.wait(Some(LONG)));
    child.kill().unwrap();
    let _ = child.join_timeout(LONG);
}

fn killed_rlock_holder_is_reported_to_the_next_acquirer(m: StartMethod) {
    let lock = RLock::new().unwrap();
    kill_once_held(
        m,
        |(lock, held): (RLock, Event)| {
            let _a = lock.lock().unwrap();
            let _b = lock.lock().unwrap();
            held.set();
            thread::sleep(LONG);
        },
        lock.clone(),
    );
    let died = lock.lock_timeout(LONG).unwrap_err();
    let TryLockError::OwnerDied(died) = died else {
        panic!("expected OwnerDied, got {died:?}")
    };
    // The dead holder's recursion is gone: one release frees it.
    assert_eq!(lock.recursion_count(), 1);
    drop(died.into_inner());
    assert_eq!(lock.recursion_count(), 0);
    lock.clear_poison();
    assert!(lock.try_lock().is_ok());
}

fn killed_condition_holder_is_reported_to_the_next_acquirer(m: StartMethod) {
    let cond = Condition::new().unwrap();
    kill_once_held(
        m,
        |(cond, held): (Condition, Event)| {
            let _g = cond.lock().unwrap();
            held.set();
            thread::sleep(LONG);
        },
        cond.clone(),
    );
    let g = cond.lock().unwrap_err().into_inner();
    assert!(cond.is_poisoned());
    // Waiting with a poisoned lock reports it again (and keeps the lock).
    assert!(cond.wait(Some(Duration::from_millis(1))).is_err());
    cond.clear_poison();
    assert!(!cond.wait(Some(Duration::from_millis(1))).unwrap());
    drop(g);
}

// ---------------------------------------------------------------------------
// Semaphores (CPython: _TestSemaphore).

fn python_test_semaphore(
    sem_acquire: impl Fn(bool) -> bool,
    release: impl Fn(),
    value: impl Fn() -> u32,
) {
    assert_eq!(value(), 2);
    assert!(sem_acquire(true));
    assert_eq!(value(), 1);
    assert!(sem_acquire(true));
    assert_eq!(value(), 0);
    assert!(!sem_acquire(false));
    assert_eq!(value(), 0);
    release();
    assert_eq!(value(), 1);
    release();
    assert_eq!(value(), 2);
}

#[test]
fn semaphore_python_semantics() {
    let sem = Semaphore::new(2).unwrap();
    python_test_semaphore(
        |b| sem.acquire(b, None),
        || sem.release().unwrap(),
        || sem.get_value(),
    );
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 3);
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 4);
}

#[test]
fn bounded_semaphore_refuses_over_release() {
    let sem = BoundedSemaphore::new(2).unwrap();
    python_test_semaphore(
        |b| sem.acquire(b, None),
        || sem.release().unwrap(),
        || sem.get_value(),
    );
    assert!(sem.release().is_err());
    assert_eq!(sem.get_value(), 2);
}

#[test]
fn semaphore_timeouts_return_in_time() {
    let sem = Semaphore::new(0).unwrap();
    assert!(!returns_in_time(Duration::ZERO, || sem.acquire(false, None)));
    // Non-blocking ignores the timeout (Python): with a 10 s timeout, one
    // that waited it out would miss `returns_in_time`'s 3 s bound.
    assert!(!returns_in_time(Duration::ZERO, || {
        sem.acquire(false, Some(LONG))
    }));
    assert!(!returns_in_time(Duration::from_millis(100), || {
        sem.acquire(true, Some(Duration::from_millis(100)))
    }));
    assert!(!returns_in_time(Duration::from_millis(50), || {
        sem.acquire(true, Some(Duration::from_millis(50)))
    }));
}

fn semaphore_counts_across_processes(m: StartMethod) {
    let sem = Semaphore::new(0).unwrap();
    let mut child = builder(m).target_with(
        |sem: Semaphore| {
            for _ in 0..3 {
                thread::sleep(Duration::from_millis(5));
                sem.release().unwrap();
            }
        },
        sem.clone(),
    );
    child.start().unwrap();
    for _ in 0..3 {
        assert!(sem.acquire(true, Some(LONG)));
    }
    child.join_timeout(LONG).unwrap();
    assert!(!sem.acquire(true, Some(Duration::from_millis(20))));
}

// ---------------------------------------------------------------------------
// Condition (CPython: _TestCondition).

#[test]
fn condition_wait_timeout_returns_false_in_time() {
    let cond = Condition::new().unwrap();
    let _g = cond.lock().unwrap();
    let woke = returns_in_time(Duration::from_millis(100), || {
        cond.wait(Some(Duration::from_millis(100))).unwrap()
    });
    assert!(!woke);
    assert!(cond.is_owned());
}

#[test]
fn condition_needs_its_lock_held() {
    let cond = Condition::new().unwrap();
    assert!(cond.wait(Some(Duration::from_millis(1))).is_err());
    assert!(cond.notify(1).is_err());
    assert!(cond.notify_all().is_err());
}

#[test]
fn condition_wait_restores_rlock_recursion() {
    let lock = RLock::new().unwrap();
    let cond = Condition::with_lock(lock.clone()).unwrap();
    let _a = lock.lock().unwrap();
    let _b = lock.lock().unwrap();
    let other = cond.clone();
    // While we wait, the lock is free for someone else.
    let helper = thread::spawn(move || {
        let _g = other.lock().unwrap();
        other.notify(1).unwrap();
    });
    assert!(cond.wait(Some(LONG)).unwrap());
    assert_eq!(lock.recursion_count(), 2);
    helper.join().unwrap();
}

#[test]
fn condition_with_a_plain_lock() {
    let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
    let _g = cond.lock().unwrap();
    assert!(!cond.wait(Some(Duration::from_millis(5))).unwrap());
}

#[test]
fn condition_wait_for() {
    // CPython: test_waitfor / test_waitfor_timeout.
    let cond = Condition::new().unwrap();
    let state = RawValue::new(0u32).unwrap();
    let helper = {
        let (cond, state) = (cond.clone(), state.clone());
        thread::spawn(move || {
            for i in 1..=4 {
                thread::sleep(Duration::from_millis(5));
                let _g = cond.lock().unwrap();
                state.set(i);
                cond.notify_all().unwrap();
            }
        })
    };
    let _g = cond.lock().unwrap();
    assert!(cond.wait_for(|| state.get() == 4, Some(LONG)).unwrap());
    assert_eq!(state.get(), 4);
    let timed_out = returns_in_time(Duration::from_millis(100), || {
        cond.wait_for(|| state.get() == 5, Some(Duration::from_millis(100)))
            .unwrap()
    });
    assert!(!timed_out);
    drop(_g);
    helper.join().unwrap();
}

/// Waiter processes for the notify test: count themselves asleep, wait,
/// count themselves woken.
fn condition_waiter((cond, sleeping, woken): (Condition, Value<u32>, Value<u32>)) -> bool {
    let _g = cond.lock().unwrap();
    *sleeping.lock().unwrap() += 1;
    let notified = cond.wait(Some(LONG)).unwrap();
    *woken.lock().unwrap() += 1;
    notified
}

fn condition_notify_wakes_at_most_n(m: StartMethod) {
    // CPython: test_notify, test_notify_all, test_notify_n.
    let cond = Condition::new().unwrap();
    let sleeping = Value::new(0u32).unwrap();
    let woken = Value::new(0u32).unwrap();
    let mut kids: Vec<_> = (0..4)
        .map(|_| {
            builder(m).target_with(
                condition_waiter,
                (cond.clone(), sleeping.clone(), woken.clone()),
            )
        })
        .collect();
    for k in &mut kids {
        k.start().unwrap();
    }
    eventually("4 sleepers", || sleeping.get().unwrap() == 4);
    // A sleeper counted itself under the lock, so it is waiting once we
    // hold the lock.
    let notify = |n: u32| {
        let _g = cond.lock().unwrap();
        cond.notify(n).unwrap();
    };
    notify(1);
    eventually("1 woken", || woken.get().unwrap() == 1);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(woken.get().unwrap(), 1, "notify(1) woke more than one");
    notify(2);
    eventually("3 woken", || woken.get().unwrap() == 3);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(woken.get().unwrap(), 3, "notify(2) woke more than two");
    {
        let _g = cond.lock().unwrap();
        cond.notify_all().unwrap();
    }
    for k in &mut kids {
        assert!(k.join_timeout(LONG).unwrap(), "every waiter was notified");
    }
    assert_eq!(woken.get().unwrap(), 4);
}

// ---------------------------------------------------------------------------
// Event (CPython: _TestEvent).

#[test]
fn event_python_semantics() {
    let event = Event::new().unwrap();
    assert!(!event.is_set());
    assert!(!returns_in_time(Duration::ZERO, || event.wait(Some(Duration::ZERO))));
    assert!(!returns_in_time(Duration::from_millis(100), || {
        event.wait(Some(Duration::from_millis(100)))
    }));
    event.set();
    assert!(event.is_set());
    assert!(event.wait(None));
    assert!(event.wait(Some(Duration::from_millis(100))));
    event.clear();
    assert!(!event.is_set());
}

#[test]
fn event_set_then_cleared_still_wakes_a_sleeper() {
    let event = Event::new().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = {
        let event = event.clone();
        thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            event.wait(Some(LONG))
        })
    };
    // Set and clear only once the waiter sleeps in `wait` (its next and
    // only blocking call after the send): the kernel says it is asleep.
    let tid = rx.recv().unwrap();
    let stat = format!("/proc/self/task/{tid}/stat");
    eventually("the waiter to sleep in wait", || {
        let s = std::fs::read_to_string(&stat).unwrap_or_default();
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('S'))
    });
    event.set();
    event.clear();
    assert!(waiter.join().unwrap());
}

fn event_across_processes(m: StartMethod) {
    let event = Event::new().unwrap();
    let mut child = builder(m).target_with(|e: Event| e.wait(Some(LONG)), event.clone());
    child.start().unwrap();
    thread::sleep(Duration::from_millis(20));
    event.set();
    assert!(child.join_timeout(LONG).unwrap());
}

// ---------------------------------------------------------------------------
// Barrier (CPython: _TestBarrier).

#[test]
fn barrier_single_party() {
    let b = Barrier::new(1).unwrap();
    assert_eq!(b.wait(None).unwrap(), 0);
    assert_eq!(b.wait(None).unwrap(), 0);
    assert_eq!(b.parties(), 1);
    assert_eq!(b.n_waiting(), 0);
}

#[test]
fn barrier_threads_get_distinct_indices_and_reuse_it() {
    let b = Barrier::new(4).unwrap();
    for _round in 0..3 {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || b.wait(Some(LONG)).unwrap())
            })
            .collect();
        let mut indices = vec![b.wait(Some(LONG)).unwrap()];
        indices.extend(handles.into_iter().map(|h| h.join().unwrap()));
        indices.sort();
        assert_eq!(indices, [0, 1, 2, 3]);
    }
    assert!(!b.broken());
}

#[test]
fn barrier_timeout_breaks_it_for_everyone() {
    // CPython: test_timeout, test_default_timeout.
    let b = Barrier::new(3).unwrap();
    let other = {
        let b = b.clone();
        thread::spawn(move || b.wait(Some(LONG)))
    };
    eventually("a waiter", || b.n_waiting() == 1);
    let r = returns_in_time(Duration::from_millis(100), || {
        b.wait(Some(Duration::from_millis(100)))
    });
    assert!(r.is_err());
    assert!(
        other.join().unwrap().is_err(),
        "the other waiter is released broken"
    );
    assert!(b.broken());
    assert_eq!(
        b.wait(Some(LONG)).unwrap_err().kind(),
        brood::ErrorKind::BrokenBarrier,
        "stays broken"
    );
    b.reset();
    assert!(!b.broken());

    let d = Barrier::with_timeout(2, Duration::from_millis(50)).unwrap();
    assert!(returns_in_time(Duration::from_millis(50), || d.wait(None)).is_err());
    assert!(d.broken());
}

#[test]
fn barrier_abort_and_reset() {
    // CPython: test_abort, test_reset, test_abort_and_reset.
    let b = Barrier::new(3).unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            thread::spawn(move || b.wait(Some(LONG)))
        })
        .collect();
    eventually("two waiters", || b.n_waiting() == 2);
    b.abort();
    for w in waiters {
        assert!(w.join().unwrap().is_err());
    }
    assert!(b.broken());
    assert_eq!(b.n_waiting(), 0);
    b.reset();
    assert!(!b.broken());

    // reset() while parties wait: they get an error, the barrier works again.
    let waiter = {
        let b = b.clone();
        thread::spawn(move || b.wait(Some(LONG)))
    };
    eventually("one waiter", || b.n_waiting() == 1);
    b.reset();
    assert!(waiter.join().unwrap().is_err());
    assert!(!b.broken());
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            thread::spawn(move || b.wait(Some(LONG)).unwrap())
        })
        .collect();
    let mut indices = vec![b.wait(Some(LONG)).unwrap()];
    indices.extend(handles.into_iter().map(|h| h.join().unwrap()));
    indices.sort();
    assert_eq!(indices, [0, 1, 2]);
}

fn barrier_across_processes(m: StartMethod) {
    let b = Barrier::new(4).unwrap();
    let mut kids: Vec<_> = (0..3)
        .map(|_| {
            builder(m).target_with(
                |b: Barrier| {
                    let first = b.wait(Some(LONG)).unwrap();
                    let second = b.wait(Some(LONG)).unwrap();
                    (first, second)
                },
                b.clone(),
            )
        })
        .collect();
    for k in &mut kids {
        k.start().unwrap();
    }
    let mine = (b.wait(Some(LONG)).unwrap(), b.wait(Some(LONG)).unwrap());
    let mut firsts = vec![mine.0];
    let mut seconds = vec![mine.1];
    for k in &mut kids {
        let (a, b) = k.join_timeout(LONG).unwrap();
        firsts.push(a);
        seconds.push(b);
    }
    firsts.sort();
    seconds.sort();
    assert_eq!(firsts, [0, 1, 2, 3]);
    assert_eq!(seconds, [0, 1, 2, 3]);
}

fn barrier_breaks_when_a_party_dies(m: StartMethod) {
    let b = Barrier::new(3).unwrap();
    // One party waits; a third would arrive half a second after it starts,
    // but is killed first: had it lived, the barrier would have tripped
    // within our 1.5 s wait. Dead, it never comes, and our timed wait
    // breaks the barrier for the party already waiting (Python's rule).
    let mut waiter = builder(m).target_with(|b: Barrier| b.wait(Some(LONG)).is_err(), b.clone());
    let mut doomed = builder(m).target_with(
        |b: Barrier| {
            thread::sleep(Duration::from_millis(500));
            b.wait(Some(LONG)).is_ok()
        },
        b.clone(),
    );
    waiter.start().unwrap();
    eventually("the waiting party", || b.n_waiting() == 1);
    doomed.start().unwrap();
    doomed.kill().unwrap();
    assert_eq!(doomed.join_timeout(LONG).unwrap_err().signal(), Some(9));
    let r = returns_in_time(Duration::from_millis(1500), || {
        b.wait(Some(Duration::from_millis(1500)))
    });
    assert!(r.is_err(), "the barrier tripped: the killed party arrived");
    assert!(b.broken());
    assert!(
        waiter.join_timeout(LONG).unwrap(),
        "the other party sees it broken"
    );
}

suite!(
    lock_excludes_processes,
    lock_timeout_returns_in_time_while_another_process_holds_it,
    rlock_is_owned_by_the_holding_process_only,
    killed_lock_holder_is_reported_to_a_blocked_acquirer,
    killed_rlock_holder_is_reported_to_the_next_acquirer,
    killed_condition_holder_is_reported_to_the_next_acquirer,
    semaphore_counts_across_processes,
    condition_notify_wakes_at_most_n,
    event_across_processes,
    barrier_across_processes,
    barrier_breaks_when_a_party_dies,
);
