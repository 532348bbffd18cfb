//! Python behaviours brood matches (or differs from on purpose), and the
//! API Python users reach for: each test names the Python behaviour it
//! checks, measured against CPython 3.11's `multiprocessing`.
//!
//! Every wait is bounded; timings are only checked as generous "returns in
//! time / does not hang" bounds.

#[macro_use]
mod common;

use common::{builder, returns_in_time};

use std::time::{Duration, Instant};

use brood::connection::{Address, Client, Listener, wait};
use brood::shm::{Array, RawArray, RawValue, Typecode, Value};
use brood::sync::{Barrier, Condition, Lock, RLock};
use brood::{Process, StartMethod};

// ----- Value's and Array's lock: Python's `with v.get_lock(): v.value += 1` -----

/// The literal port of Python's counter: take the lock, then read and
/// write through the value's own methods. 2 children x 1000 = 2000 exactly.
fn value_counter_literal_port(m: StartMethod) {
    let v = Value::new(0i64).unwrap();
    let mut kids: Vec<_> = (0..2)
        .map(|_| {
            builder(m).target_with(
                |v: Value<i64>| {
                    for _ in 0..1000 {
                        let _held = v.get_lock().lock().unwrap();
                        v.set(v.get().unwrap() + 1).unwrap();
                    }
                },
                v.clone(),
            )
        })
        .collect();
    for k in &mut kids {
        k.start().unwrap();
    }
    for k in &mut kids {
        k.join().unwrap();
    }
    assert_eq!(v.get().unwrap(), 2000);
}

/// The same for an array element, with Python's `acquire`/`release`.
fn array_counter_literal_port(m: StartMethod) {
    let a = Array::<u32>::zeroed(2).unwrap();
    let mut kids: Vec<_> = (0..2)
        .map(|_| {
            builder(m).target_with(
                |a: Array<u32>| {
                    for _ in 0..1000 {
                        assert!(a.get_lock().acquire(true, None).unwrap());
                        a.set(1, a.get(1).unwrap() + 1).unwrap();
                        a.get_lock().release().unwrap();
                    }
                },
                a.clone(),
            )
        })
        .collect();
    for k in &mut kids {
        k.start().unwrap();
    }
    for k in &mut kids {
        k.join().unwrap();
    }
    assert_eq!(a.to_vec().unwrap(), [0, 2000]);
}

#[test]
fn value_methods_work_while_this_thread_holds_the_lock() {
    let v = Value::new(1u32).unwrap();
    let a = Array::new(&[1u8, 2, 3]).unwrap();
    {
        let _held = v.get_lock().lock().unwrap();
        v.set(v.get().unwrap() + 1).unwrap();
        assert_eq!(v.get().unwrap(), 2);
    }
    {
        let _held = a.get_lock().lock().unwrap();
        a.set(0, 9).unwrap();
        assert_eq!(a.to_vec().unwrap(), [9, 2, 3]);
    }
    // Released again: another thread gets it at once.
    let (v2, a2) = (v.clone(), a.clone());
    std::thread::spawn(move || {
        assert!(v2.get_lock().try_lock().is_ok());
        assert!(a2.get_lock().try_lock().is_ok());
    })
    .join()
    .unwrap();
}

#[test]
fn value_methods_while_a_guard_lives_fail_instead_of_aliasing() {
    let v = Value::new(5i32).unwrap();
    let mut guard = v.lock().unwrap();
    let err = v.get().unwrap_err();
    assert_eq!(err.kind(), brood::ErrorKind::InvalidState, "{err}");
    assert!(v.set(1).is_err());
    *guard += 1;
    drop(guard);
    assert_eq!(v.get().unwrap(), 6);

    let a = Array::new(&[1u8]).unwrap();
    let g = a.lock().unwrap();
    assert!(a.get(0).is_err());
    assert!(a.value().is_err());
    drop(g);
    assert_eq!(a.get(0).unwrap(), 1);
}

#[test]
fn value_lock_again_panics_instead_of_deadlocking() {
    // Python's RLock would let `with v.get_lock(): with v.get_lock():` nest;
    // brood's guard hands out &mut, so a second lock() from the holder
    // panics (a Lock is not reentrant) instead of aliasing or hanging.
    let v = Value::new(1u8).unwrap();
    let _held = v.get_lock().lock().unwrap();
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = v.lock();
    }));
    assert!(again.is_err());
    // The holder's own get/set still work, and the lock is still held.
    v.set(2).unwrap();
    assert_eq!(v.get().unwrap(), 2);
    assert!(v.get_lock().is_owned());
}

#[test]
fn values_sharing_a_lock_read_each_other_under_one_guard() {
    // Python: Value('i', 1, lock=l); Value('i', 2, lock=l); `with l: a.value + b.value`.
    let lock = Lock::new().unwrap();
    let a = Value::with_lock(1u32, lock.clone()).unwrap();
    let b = Value::with_lock(2u32, lock).unwrap();
    let mut ga = a.lock().unwrap();
    *ga += b.get().unwrap(); // b is not lent to a guard: read directly
    assert!(a.get().is_err()); // a is
    drop(ga);
    assert_eq!(a.get().unwrap(), 3);
}

#[test]
fn a_forked_child_does_not_inherit_its_parents_guards() {
    common::allow_fork();
    let v = Value::new(7u64).unwrap();
    let guard = v.lock().unwrap();
    // The parent's guard is alive at the fork; the child's lock is free
    // (a Lock belongs to a thread of one process) and its methods work.
    let mut child = Process::fork({
        let v = v.clone();
        move || {
            let _held = v.get_lock().lock().unwrap();
            v.set(v.get().unwrap() + 1).map_err(|e| e.to_string())
        }
    });
    drop(guard);
    child.start().unwrap();
    child.join().unwrap().unwrap();
    assert_eq!(v.get().unwrap(), 8);
}

// ----- Lock: a timed acquire by the holder waits out its timeout -----

#[test]
fn lock_holder_timed_acquire_waits_out_the_timeout() {
    // Python: l.acquire(); l.acquire(True, 0.2) -> False after 0.2 s.
    let lock = Lock::new().unwrap();
    assert!(lock.acquire(true, None).unwrap());
    let got = returns_in_time(Duration::from_millis(200), || {
        lock.acquire(true, Some(Duration::from_millis(200)))
    });
    assert!(!got.unwrap());
    let guard = returns_in_time(Duration::from_millis(100), || {
        lock.lock_timeout(Duration::from_millis(100))
    });
    assert!(matches!(guard, Err(brood::sync::TryLockError::WouldBlock)));
    // Non-blocking: fails at once, as in Python.
    let t = Instant::now();
    assert!(!lock.acquire(false, None).unwrap());
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(lock.is_owned()); // still held once
    lock.release().unwrap();
    assert!(lock.release().is_err());
}

#[test]
fn rlock_holder_timed_acquire_takes_another_level_at_once() {
    let lock = RLock::new().unwrap();
    assert!(lock.acquire(true, None).unwrap());
    let t = Instant::now();
    assert!(lock.acquire(true, Some(Duration::from_secs(5))).unwrap());
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(lock.recursion_count(), 2);
    lock.release().unwrap();
    lock.release().unwrap();
}

// ----- Lock::locked, owners in Debug -----

#[test]
fn locked_sees_a_holder_in_another_process() {
    common::allow_fork();
    let lock = Lock::new().unwrap();
    assert!(!lock.locked());
    let (r, w) = common::pipe();
    let (r2, w2) = common::pipe();
    let mut child = Process::fork({
        let lock = lock.clone();
        move || {
            let _g = lock.lock().unwrap();
            common::write_i32(&w, 1);
            common::read_i32(&r2); // hold until told
        }
    });
    child.start().unwrap();
    assert_eq!(common::read_i32(&r), 1);
    assert!(lock.locked());
    assert!(!lock.is_owned());
    let owner = lock.owner().unwrap();
    assert_eq!(Some(owner.pid), child.pid());
    assert!(!owner.is_current_thread());
    let debug = format!("{lock:?}");
    assert!(debug.contains(&format!("pid: {}", owner.pid)), "{debug}");
    common::write_i32(&w2, 1);
    child.join().unwrap();
    assert!(!lock.locked());
    assert!(lock.owner().is_none());
}

#[test]
fn rlock_debug_shows_owner_and_count() {
    // Python: repr(RLock()) is <RLock(None, 0)>, then <RLock(MainProcess, 2)>.
    let lock = RLock::new().unwrap();
    let free = format!("{lock:?}");
    assert!(
        free.contains("owner: None") && free.contains("count: 0"),
        "{free}"
    );
    let _a = lock.lock().unwrap();
    let _b = lock.lock().unwrap();
    let held = format!("{lock:?}");
    assert!(
        held.contains(&format!("pid: {}", brood::os::getpid())) && held.contains("count: 2"),
        "{held}"
    );
    assert_eq!(lock.owner().unwrap().count, 2);
    assert!(lock.locked());
}

// ----- Value/Array: zero values, typecodes, char arrays -----

#[test]
fn zero_values_without_an_initial_argument() {
    // Python: Value('i').value == 0, Value('c').value == b'\x00'.
    assert_eq!(Value::<i64>::zeroed().unwrap().get().unwrap(), 0);
    assert_eq!(Value::<f64>::zeroed().unwrap().get().unwrap(), 0.0);
    let c = Value::<u8>::from_typecode('c').unwrap();
    assert_eq!(c.get().unwrap(), 0);
    assert_eq!(c.typecode(), Some(Typecode::Char));
    assert_eq!(RawValue::<i32>::zeroed().unwrap().get(), 0);
    assert!(Value::<i32>::from_typecode('d').is_err());
    assert!(Value::<i32>::from_typecode('x').is_err());
}

#[test]
fn typecode_is_the_one_given_not_its_alias() {
    assert_eq!(
        Value::with_typecode('q', 1i64).unwrap().typecode(),
        Some(Typecode::LongLong)
    );
    assert_eq!(
        Value::with_typecode('l', 1i64).unwrap().typecode(),
        Some(Typecode::Long)
    );
    assert_eq!(
        Array::with_typecode('c', b"ab").unwrap().typecode(),
        Some(Typecode::Char)
    );
    assert_eq!(
        Array::with_typecode('B', b"ab").unwrap().typecode(),
        Some(Typecode::UByte)
    );
    assert_eq!(
        RawArray::<u64>::from_typecode('Q', 2).unwrap().typecode(),
        Some(Typecode::ULongLong)
    );
    // Without a code, T's own.
    assert_eq!(Array::new(b"ab").unwrap().typecode(), Some(Typecode::UByte));
}

fn typecode_crosses_to_a_child(m: StartMethod) {
    let a = Array::<u8>::from_typecode('c', 4).unwrap();
    let mut p = builder(m).target_with(
        |a: Array<u8>| {
            a.set_value(b"hey").unwrap();
            a.typecode().map(|c| c.as_char())
        },
        a.clone(),
    );
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), Some('c'));
    assert_eq!(a.value().unwrap(), b"hey");
}

#[test]
fn char_arrays_value_and_raw_like_python() {
    // Every line checked against CPython 3.11: a = Array('c', 5) ...
    let a = Array::<u8>::from_typecode('c', 5).unwrap();
    assert_eq!(a.value().unwrap(), b""); // a.value == b''
    assert_eq!(a.raw().unwrap(), b"\0\0\0\0\0");
    a.set_value(b"ab").unwrap(); // a.value = b'ab'
    assert_eq!(a.value().unwrap(), b"ab");
    assert_eq!(a.raw().unwrap(), b"ab\0\0\0");
    a.set_raw(b"xy\0zw").unwrap(); // a.raw = b'xy\x00zw'
    assert_eq!(a.value().unwrap(), b"xy");
    assert_eq!(a.raw().unwrap(), b"xy\0zw");
    a.set_value(b"abcde").unwrap(); // exactly full: no NUL
    assert_eq!(a.value().unwrap(), b"abcde");
    a.set_raw(b"q").unwrap(); // a.raw = b'q': the rest stays
    assert_eq!(a.raw().unwrap(), b"qbcde");
    a.set_value(b"x").unwrap(); // a.value = b'x' -> raw b'x\x00cde'
    assert_eq!(a.raw().unwrap(), b"x\0cde");
    a.set_value(b"a\0b").unwrap(); // raw b'a\x00b\x00e', value b'a'
    assert_eq!(a.raw().unwrap(), b"a\0b\0e");
    assert_eq!(a.value().unwrap(), b"a");
    // Too long: ValueError in Python; an error here, nothing changed.
    let err = a.set_value(b"abcdef").unwrap_err();
    assert!(err.to_string().contains("too long"), "{err}");
    assert!(a.set_raw(b"abcdef").is_err());
    assert_eq!(a.raw().unwrap(), b"a\0b\0e");

    // brood: on any u8 array ('B' too), not only 'c' ones.
    let b = Array::with_typecode('B', b"ab\0c").unwrap();
    assert_eq!(b.value().unwrap(), b"ab");

    let r = RawArray::<u8>::from_typecode('c', 3).unwrap();
    r.set_value(b"hi").unwrap();
    assert_eq!((r.value(), r.raw()), (b"hi".to_vec(), b"hi\0".to_vec()));
    assert!(r.set_raw(b"long").is_err());
}

// ----- Barrier's action, Condition::wait_for's value -----

/// Python: Barrier(3, action=f): f runs once per trip, in one party, before
/// any party goes on.
fn barrier_action_runs_once_before_anyone_goes_on(m: StartMethod) {
    let barrier = Barrier::new(3).unwrap();
    // [times the action ran, pid that ran it]
    let seen = Array::<i32>::zeroed(2).unwrap();
    fn party(b: &Barrier, seen: &Array<i32>) -> (usize, i32, i32) {
        let me = brood::os::getpid().as_raw();
        let index = b
            .wait_with(Some(Duration::from_secs(10)), || {
                let mut g = seen.lock().unwrap();
                g[0] += 1;
                g[1] = me;
            })
            .unwrap();
        // Everyone sees the action done the moment it is released.
        let after = seen.to_vec().unwrap();
        (index, after[0], me)
    }
    let mut kids: Vec<_> = (0..2)
        .map(|_| {
            builder(m).target_with(
                |(b, seen): (Barrier, Array<i32>)| party(&b, &seen),
                (barrier.clone(), seen.clone()),
            )
        })
        .collect();
    for k in &mut kids {
        k.start().unwrap();
    }
    let mut results = vec![party(&barrier, &seen)];
    for k in &mut kids {
        results.push(k.join().unwrap());
    }
    let runs = seen.to_vec().unwrap();
    assert_eq!(runs[0], 1, "the action ran {} times", runs[0]);
    for (_, seen_runs, _) in &results {
        assert_eq!(*seen_runs, 1);
    }
    // The party that ran it is the one that tripped the barrier (index 2).
    let tripper = results.iter().find(|r| r.0 == 2).unwrap();
    assert_eq!(tripper.2, runs[1]);
    let mut indices: Vec<usize> = results.iter().map(|r| r.0).collect();
    indices.sort();
    assert_eq!(indices, [0, 1, 2]);
}

#[test]
fn barrier_action_that_panics_breaks_the_barrier() {
    // Python: the action's exception is re-raised in the party that ran
    // it, and the others get BrokenBarrierError.
    let barrier = Barrier::new(2).unwrap();
    let other = {
        let b = barrier.clone();
        std::thread::spawn(move || b.wait(Some(Duration::from_secs(10))))
    };
    let t = Instant::now();
    while barrier.n_waiting() < 1 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the other party never waited"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let panicked = std::panic::catch_unwind(|| {
        barrier.wait_with(Some(Duration::from_secs(10)), || panic!("action failed"))
    });
    assert!(panicked.is_err());
    let err = other.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), brood::ErrorKind::BrokenBarrier);
    assert!(barrier.broken());
    // Usable again after reset, and the mutex was released.
    barrier.reset();
    let b = barrier.clone();
    let t = std::thread::spawn(move || b.wait(Some(Duration::from_secs(10))).unwrap());
    let mine = barrier.wait(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(mine + t.join().unwrap(), 1);
}

/// Python: cond.wait_for(pred, timeout) returns pred's last value: the
/// truthy one, or the falsy one after the timeout.
fn condition_wait_for_returns_the_predicates_value(m: StartMethod) {
    let cond = Condition::new().unwrap();
    let slot = Value::new(0u32).unwrap();
    let held = cond.lock().unwrap();
    let mut child = builder(m).target_with(
        |(cond, slot): (Condition, Value<u32>)| {
            std::thread::sleep(Duration::from_millis(50));
            let _held = cond.lock().unwrap();
            slot.set(42).unwrap();
            cond.notify_all().unwrap();
        },
        (cond.clone(), slot.clone()),
    );
    child.start().unwrap();
    let got = cond
        .wait_for(
            || Some(slot.get().unwrap()).filter(|v| *v != 0),
            Some(Duration::from_secs(10)),
        )
        .unwrap();
    assert_eq!(got, Some(42));
    drop(held);
    child.join().unwrap();

    let _held = cond.lock().unwrap();
    let mut calls = 0;
    let last = returns_in_time(Duration::from_millis(100), || {
        cond.wait_for(
            || {
                calls += 1;
                0usize
            },
            Some(Duration::from_millis(100)),
        )
    });
    assert_eq!(last.unwrap(), 0);
    assert!(calls >= 2, "the predicate is checked again after the wait");
}

// ----- Listener: close, last_accepted, an address of its own, wait -----

/// Python: Listener() picks a Unix path in a private temp dir; a child
/// connects to it with the key.
fn listener_without_an_address_serves_a_child(m: StartMethod) {
    use std::os::unix::fs::PermissionsExt;
    let l = Listener::new(Some(b"secret")).unwrap();
    let Address::Unix(path) = l.address().clone() else {
        panic!("not a unix address: {}", l.address())
    };
    let dir = path.parent().unwrap().to_path_buf();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the directory is private");
    let mut p = builder(m).target_with(
        |address: String| {
            let mut c = Client::connect(&address.parse().unwrap(), Some(b"secret")).unwrap();
            c.send(&"hi").unwrap();
        },
        l.address().to_string(),
    );
    p.start().unwrap();
    let mut conn = l.accept_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(conn.recv::<String>().unwrap(), "hi");
    p.join().unwrap();
    // Python's last_accepted for an unnamed Unix peer is ''.
    assert_eq!(l.last_accepted(), Some(Address::Unix(Default::default())));
    drop(l);
    assert!(
        !path.exists() && !dir.exists(),
        "drop removes socket and dir"
    );
}

#[test]
fn listener_close_stops_accepting_and_removes_its_files() {
    let mut l = Listener::new(None).unwrap();
    let Address::Unix(path) = l.address().clone() else {
        unreachable!()
    };
    let mut client = Client::connect(l.address(), None).unwrap();
    let mut accepted = l.accept().unwrap();
    l.close();
    assert!(l.closed());
    assert!(!path.exists() && !path.parent().unwrap().exists());
    // Python: OSError('listener is closed'); here InvalidState, at once.
    let t = Instant::now();
    assert_eq!(
        l.accept().unwrap_err().kind(),
        brood::ErrorKind::InvalidState
    );
    assert_eq!(
        l.accept_timeout(Duration::from_secs(5)).unwrap_err().kind(),
        brood::ErrorKind::InvalidState
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    l.close(); // twice: nothing
    // Connecting now fails; the accepted connection still works.
    assert!(Client::connect(&Address::Unix(path), None).is_err());
    client.send(&5u8).unwrap();
    assert_eq!(accepted.recv::<u8>().unwrap(), 5);
    // A closed listener is "ready" for wait: its accept does not block.
    assert_eq!(wait(&[&l], Some(Duration::from_secs(5))).unwrap(), [0]);
}

#[test]
fn listener_last_accepted_names_a_tcp_peer() {
    // Python: ('127.0.0.1', port of the client).
    let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), None).unwrap();
    assert_eq!(l.last_accepted(), None);
    let c = Client::connect(l.address(), None).unwrap();
    let _conn = l.accept().unwrap();
    let Some(Address::Tcp(peer)) = l.last_accepted() else {
        panic!("{:?}", l.last_accepted())
    };
    assert!(peer.ip().is_loopback());
    assert_ne!(peer.port(), 0);
    drop(c);
}

fn wait_covers_listeners_beside_connections(m: StartMethod) {
    let l = Listener::new(None).unwrap();
    let (mut a, b) = brood::pipe(true).unwrap();
    // Nothing yet: the wait times out.
    assert!(
        wait(&[&l, &b], Some(Duration::from_millis(50)))
            .unwrap()
            .is_empty()
    );
    let mut p = builder(m).target_with(
        |address: String| {
            let _c = Client::connect(&address.parse().unwrap(), None).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        },
        l.address().to_string(),
    );
    p.start().unwrap();
    assert_eq!(wait(&[&b, &l], Some(Duration::from_secs(10))).unwrap(), [1]);
    let _conn = l.accept().unwrap();
    a.send(&1u8).unwrap();
    assert_eq!(wait(&[&l, &b], Some(Duration::from_secs(10))).unwrap(), [1]);
    p.join().unwrap();
}

// ----- Start methods -----

#[test]
fn get_all_start_methods_lists_the_default_first() {
    // Python 3.14 on Linux: ['forkserver', 'fork', 'spawn'], whatever
    // set_start_method chose (the list names the platform default).
    let names = |all: Vec<StartMethod>| all.iter().map(|m| m.name()).collect::<Vec<_>>();
    assert_eq!(
        names(brood::get_all_start_methods()),
        ["forkserver", "fork", "spawn"]
    );
    brood::set_start_method(StartMethod::ForkServer, true).unwrap();
    assert_eq!(
        names(brood::get_all_start_methods()),
        ["forkserver", "fork", "spawn"]
    );
}

#[test]
fn set_forkserver_preload_is_accepted_and_changes_nothing() {
    brood::set_forkserver_preload(&["__main__", "no_such_module"]);
    let mut p = builder(StartMethod::ForkServer).target(|| brood::current_process().name);
    p.start().unwrap();
    assert!(p.join().unwrap().starts_with("Process-"));
}

// ----- authkey -----

/// Python: a child's current_process().authkey is its parent's; p.authkey
/// = k gives one child its own; setting the parent's changes later
/// children's; a grandchild inherits its parent's (the child's) key.
fn authkey_is_inherited_and_settable_per_process(m: StartMethod) {
    let mine = brood::authkey();
    assert_eq!(mine.len(), 32);
    assert_eq!(brood::authkey(), mine, "stable within a process");
    let mut p = builder(m).target(brood::authkey);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), mine);

    let mut p = builder(m).authkey(b"own key").target(|| {
        // The child's key goes to its own children.
        let mut g = Process::builder().target(brood::authkey);
        g.start().unwrap();
        (brood::authkey(), g.join().unwrap())
    });
    p.start().unwrap();
    let (child, grandchild) = p.join().unwrap();
    assert_eq!(child, b"own key");
    assert_eq!(grandchild, b"own key");
    assert_eq!(brood::authkey(), mine, "the parent's key is unchanged");

    let mut p = builder(m).target(brood::authkey);
    p.set_authkey(b"set on the handle").unwrap();
    p.start().unwrap();
    assert!(p.set_authkey(b"too late").is_err());
    assert_eq!(p.join().unwrap(), b"set on the handle");
}

#[test]
fn setting_this_processs_authkey_reaches_children_made_later() {
    common::allow_fork();
    // A fork child, so setting the key does not change this test process's.
    let mut outer = Process::fork(|| {
        brood::set_authkey(b"old");
        // Python: a Process takes its creator's key when it is made.
        let mut made_before = Process::builder()
            .start_method(StartMethod::Spawn)
            .target(brood::authkey);
        brood::set_authkey(b"changed");
        let mut p = Process::builder()
            .start_method(StartMethod::Spawn)
            .target(brood::authkey);
        p.start().unwrap();
        made_before.start().unwrap();
        (
            brood::authkey(),
            p.join().unwrap(),
            made_before.join().unwrap(),
        )
    });
    outer.start().unwrap();
    let (own, child, made_before) = outer.join().unwrap();
    assert_eq!(own, b"changed");
    assert_eq!(child, b"changed");
    assert_eq!(made_before, b"old");
}

// ----- parent_process -----

/// The grandchild's view of its parent: (parent pid it names, ms its join
/// took, alive afterwards).
type Watch = (i32, i64, bool);

/// Starts a middle child that starts a grandchild watching its parent with
/// `parent_process()`, then SIGKILLs itself after `middle_lives`; the
/// grandchild sleeps `first` before it looks. Returns the middle's pid and
/// what the grandchild saw.
fn watch_a_dying_parent(m: StartMethod, middle_lives_ms: u64, first_ms: u64) -> (i32, Watch) {
    let out = Array::<i64>::zeroed(4).unwrap();
    let mut middle = builder(m).target_with(
        |(m, out, lives, first): (StartMethod, Array<i64>, u64, u64)| {
            let mut g = Process::builder().start_method(m).target_with(
                |(out, first): (Array<i64>, u64)| {
                    std::thread::sleep(Duration::from_millis(first));
                    let parent = brood::parent_process().unwrap();
                    let t = Instant::now();
                    let joined = parent.join_timeout(Duration::from_secs(20));
                    let took = t.elapsed().as_millis() as i64;
                    let mut g = out.lock().unwrap();
                    g[1] = i64::from(parent.pid.as_raw());
                    g[2] = if joined.is_ok() { took } else { -1 };
                    g[3] = i64::from(parent.is_alive());
                    g[0] = 1;
                },
                (out, first),
            );
            g.start().unwrap();
            std::thread::sleep(Duration::from_millis(lives));
            let _ = brood::os::kill(brood::os::getpid(), libc::SIGKILL);
        },
        (m, out.clone(), middle_lives_ms, first_ms),
    );
    middle.start().unwrap();
    let middle_pid = middle.pid().unwrap().as_raw();
    assert!(middle.join().is_err(), "the middle child was killed");
    let t = Instant::now();
    while out.get(0).unwrap() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the grandchild never reported"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let v = out.to_vec().unwrap();
    (middle_pid, (v[1] as i32, v[2], v[3] != 0))
}

/// Python: parent_process().join(timeout) returns when the parent dies
/// (the forkserver's children too: their parent is the starter).
fn parent_join_returns_when_the_parent_dies(m: StartMethod) {
    let (middle, (named, took_ms, alive)) = watch_a_dying_parent(m, 300, 0);
    assert_eq!(named, middle, "parent_process() names the middle child");
    assert!(took_ms >= 0, "join timed out instead of seeing the death");
    assert!(took_ms < 10_000, "join took {took_ms} ms");
    assert!(!alive);
}

/// The parent died (and the grandchild was reparented) before the
/// grandchild asked: is_alive is false and join returns at once, whatever
/// process has the pid now.
fn parent_that_died_before_asking_is_not_alive(m: StartMethod) {
    let (middle, (named, took_ms, alive)) = watch_a_dying_parent(m, 0, 300);
    assert_eq!(named, middle);
    assert!((0..1000).contains(&took_ms), "join took {took_ms} ms");
    assert!(!alive);
}

#[test]
fn parent_process_is_none_in_the_main_process_and_alive_in_a_child() {
    assert!(brood::parent_process().is_none());
    let mut p = builder(StartMethod::ForkServer).target(|| {
        let parent = brood::parent_process().unwrap();
        let waited = parent.join_timeout(Duration::from_millis(50));
        let sentinel = parent.sentinel().unwrap();
        (
            parent,
            parent_alive(),
            waited.unwrap_err().is_timeout(),
            sentinel.is_some(),
        )
    });
    fn parent_alive() -> bool {
        brood::parent_process().unwrap().is_alive()
    }
    p.start().unwrap();
    let (parent, alive, timed_out, has_sentinel) = p.join().unwrap();
    assert_eq!(parent.pid, brood::os::getpid());
    assert_eq!(parent.name, "MainProcess");
    assert!(alive && timed_out && has_sentinel);
    // The description crosses back and still names this (live) process.
    assert!(parent.is_alive());
}

suite!(
    value_counter_literal_port,
    array_counter_literal_port,
    typecode_crosses_to_a_child,
    barrier_action_runs_once_before_anyone_goes_on,
    condition_wait_for_returns_the_predicates_value,
    listener_without_an_address_serves_a_child,
    wait_covers_listeners_beside_connections,
    authkey_is_inherited_and_settable_per_process,
    parent_join_returns_when_the_parent_dies,
    parent_that_died_before_asking_is_not_alive,
);
