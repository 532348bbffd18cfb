//! Regression tests for bugs found by users coming from Python (issues 8
//! and 9): each fails on the code before its fix.

#[macro_use]
mod common;

use std::time::Duration;

use brood::connection::{self, Client, Listener};
use brood::sync::{Barrier, Condition, Event, Lock, Semaphore};
use brood::{Process, StartMethod};

/// "Wait as long as it takes", spelled the largest way.
const FOREVER: Duration = Duration::MAX;

// One test per start method for each of these (modules fork, spawn,
// forkserver).
suite!(
    join_timeout_max_waits_for_the_child,
    notify_goes_to_the_waiter_that_was_waiting,
    a_child_starts_its_children_the_way_it_was_started,
);

// ---------------------------------------------------------------------
// A timeout too large to add to `Instant::now()` waits, never panics.
// ---------------------------------------------------------------------

fn join_timeout_max_waits_for_the_child(m: StartMethod) {
    common::allow_fork();
    let mut p = Process::builder().start_method(m).target_with(
        |ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            7u8
        },
        50,
    );
    p.start().unwrap();
    assert_eq!(p.join_timeout(FOREVER).unwrap(), 7);
    assert_eq!(p.exitcode(), Some(0));
}

#[test]
fn connection_timeouts_of_duration_max_wait() {
    let (mut a, mut b) = connection::pipe(true).unwrap();
    a.send_timeout(&1u32, FOREVER).unwrap();
    assert!(b.poll(Some(FOREVER)).unwrap());
    assert_eq!(b.recv_timeout::<u32>(FOREVER).unwrap(), 1);
    a.send_bytes_timeout(b"xy", FOREVER).unwrap();
    assert_eq!(b.recv_bytes_timeout(FOREVER).unwrap(), b"xy");
    a.send(&2u32).unwrap();
    assert_eq!(connection::wait(&[&b], Some(FOREVER)).unwrap(), vec![0]);
    // A message that arrives later is waited for.
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        a.send(&3u32).unwrap();
        a
    });
    assert_eq!(b.recv::<u32>().unwrap(), 2);
    assert!(b.poll(Some(FOREVER)).unwrap());
    assert_eq!(b.recv_timeout::<u32>(FOREVER).unwrap(), 3);
    t.join().unwrap();
}

#[test]
fn listener_timeouts_of_duration_max_wait() {
    let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), Some(b"key")).unwrap();
    let address = l.address().clone();
    let t = std::thread::spawn(move || {
        let mut c = Client::connect_timeout(&address, Some(b"key"), FOREVER).unwrap();
        c.send(&5u8).unwrap();
    });
    let mut conn = l.accept_timeout(FOREVER).unwrap();
    assert_eq!(conn.recv_timeout::<u8>(FOREVER).unwrap(), 5);
    t.join().unwrap();
}

#[test]
fn pidfd_wait_of_duration_max_waits() {
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .target(|| ());
    p.start().unwrap();
    let fd = brood::os::PidFd::open(p.pid().unwrap()).unwrap();
    assert!(fd.wait_timeout(Some(FOREVER)).unwrap());
    p.join().unwrap();
}

#[test]
fn sync_timeouts_of_duration_max_wait() {
    let lock = Lock::new().unwrap();
    assert!(lock.acquire(true, Some(FOREVER)).unwrap());
    lock.release().unwrap();
    drop(lock.lock_timeout(FOREVER).unwrap());

    let sem = Semaphore::new(0).unwrap();
    let s2 = sem.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        s2.release().unwrap();
    });
    assert!(sem.acquire(true, Some(FOREVER)));
    t.join().unwrap();

    let ev = Event::new().unwrap();
    let e2 = ev.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        e2.set();
    });
    assert!(ev.wait(Some(FOREVER)));
    t.join().unwrap();

    let b = Barrier::with_timeout(2, FOREVER).unwrap();
    let b2 = b.clone();
    let t = std::thread::spawn(move || b2.wait(Some(FOREVER)).unwrap());
    b.wait(None).unwrap();
    t.join().unwrap();

    let cond = Condition::new().unwrap();
    let c2 = cond.clone();
    let held = cond.lock().unwrap();
    let t = std::thread::spawn(move || {
        let _held = c2.lock().unwrap();
        c2.notify(1).unwrap();
    });
    assert!(cond.wait(Some(FOREVER)).unwrap());
    drop(held);
    t.join().unwrap();
}

// ---------------------------------------------------------------------
// Condition::notify wakes a waiter that was waiting when it ran.
// ---------------------------------------------------------------------

/// A child waits; the parent notifies once, then waits itself, and a thread
/// that arrives after the notify waits too. The wake-up is the child's:
/// neither later wait may take it (both time out), and the child returns
/// at once, notified.
fn notify_goes_to_the_waiter_that_was_waiting(m: StartMethod) {
    common::allow_fork();
    let cond = Condition::new().unwrap();
    let waiting = Event::new().unwrap();
    let mut child = Process::builder().start_method(m).target_with(
        |(cond, waiting): (Condition, Event)| {
            let _held = cond.lock().unwrap();
            waiting.set();
            let t0 = std::time::Instant::now();
            let notified = cond.wait(Some(Duration::from_secs(20))).unwrap();
            (notified, t0.elapsed().as_millis() as u64)
        },
        (cond.clone(), waiting.clone()),
    );
    child.start().unwrap();
    assert!(waiting.wait(Some(Duration::from_secs(20))));
    // The child released the lock inside `wait`: it is registered.
    let held = cond.lock().unwrap();
    let late = {
        let cond = cond.clone();
        std::thread::spawn(move || {
            let _held = cond.lock().unwrap();
            cond.wait(Some(Duration::from_millis(300))).unwrap()
        })
    };
    cond.notify(1).unwrap();
    let mine = cond.wait(Some(Duration::from_millis(300))).unwrap();
    drop(held);
    let late = late.join().unwrap();
    let (notified, waited_ms) = child.join().unwrap();
    assert!(!mine, "the notifier's own later wait took the wake-up");
    assert!(!late, "a wait that began after the notify took the wake-up");
    assert!(notified, "the waiting child was not notified");
    assert!(
        waited_ms < 10_000,
        "the waiting child slept {waited_ms} ms: it was not woken"
    );
}

/// notify(2) with two waiters wakes both, and a notify_all after a timed-out
/// waiter left wakes the rest: no wake-up is lost or kept for later.
#[test]
fn timed_out_waiters_leave_no_token_behind() {
    let cond = Condition::new().unwrap();
    let held = cond.lock().unwrap();
    // A wait that times out with nobody notifying returns false and leaves
    // nothing behind for a later waiter.
    assert!(!cond.wait(Some(Duration::from_millis(20))).unwrap());
    let t = {
        let cond = cond.clone();
        std::thread::spawn(move || {
            let _held = cond.lock().unwrap();
            cond.wait(Some(Duration::from_millis(200))).unwrap()
        })
    };
    drop(held);
    assert!(!t.join().unwrap(), "a waiter woke without a notify");
}

// ---------------------------------------------------------------------
// A child's default start method is the one its parent asked for.
// ---------------------------------------------------------------------

/// Python forces a child's start method to the one that started it, so its
/// own children start the same way; brood's children all said forkserver.
fn a_child_starts_its_children_the_way_it_was_started(m: StartMethod) {
    common::allow_fork();
    let mut p = Process::builder().start_method(m).target(|| {
        let mine = brood::get_start_method();
        let mut grandchild = Process::new(brood::get_start_method);
        grandchild.start().unwrap();
        let used = grandchild.start_method();
        let theirs = grandchild.join().unwrap();
        // Set, as Python's is: changing it needs force.
        let fixed = brood::set_start_method(StartMethod::Spawn, false).is_err();
        (mine, used, theirs, fixed)
    });
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (m, Some(m), m, true));
}

/// A timeout that does fit in an `Instant` but lies centuries away: every
/// conversion on the way to the kernel (poll's milliseconds, the futex's
/// timespec, the robust mutex's absolute CLOCK_REALTIME deadline) saturates
/// instead of wrapping into a negative or tiny wait.
#[test]
fn centuries_long_timeouts_wait_for_the_event() {
    const CENTURIES: Duration = Duration::from_secs(1 << 40);
    let later = |f: Box<dyn FnOnce() + Send>| {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            f()
        })
    };
    let (mut a, mut b) = connection::pipe(true).unwrap();
    let t = later(Box::new(move || a.send(&9u8).unwrap()));
    assert!(b.poll(Some(CENTURIES)).unwrap());
    assert_eq!(b.recv_timeout::<u8>(CENTURIES).unwrap(), 9);
    t.join().unwrap();

    let ev = Event::new().unwrap();
    let e2 = ev.clone();
    let t = later(Box::new(move || e2.set()));
    assert!(ev.wait(Some(CENTURIES)));
    t.join().unwrap();

    let sem = Semaphore::new(0).unwrap();
    let s2 = sem.clone();
    let t = later(Box::new(move || s2.release().unwrap()));
    assert!(sem.acquire(true, Some(CENTURIES)));
    t.join().unwrap();

    // A lock held by another thread for a moment: a timed acquire waits.
    let lock = Lock::new().unwrap();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let l2 = lock.clone();
    let t = std::thread::spawn(move || {
        let guard = l2.lock().unwrap();
        held_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        drop(guard);
    });
    held_rx.recv().unwrap();
    assert!(lock.acquire(true, Some(CENTURIES)).unwrap());
    lock.release().unwrap();
    t.join().unwrap();

    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .target_with(|x: u8| x, 3);
    p.start().unwrap();
    assert_eq!(p.join_timeout(CENTURIES).unwrap(), 3);
}
