//! Arenas: small shared objects (`Value`, small `Array`s, every `sync`
//! primitive) share a few `memfd` mappings instead of one or two fds each,
//! cross to children with one fd per arena, and reuse freed space.

#[macro_use]
mod common;

use std::time::Duration;

use brood::shm::{Array, Value};
use brood::sync::{Lock, TryLockError};
use brood::{Process, StartMethod};

const LONG: Duration = Duration::from_secs(60);

/// Lowers this process's soft `RLIMIT_NOFILE` until dropped.
struct FdLimit(libc::rlimit);

impl FdLimit {
    fn set(soft: libc::rlim_t) -> FdLimit {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `old` is valid for writes.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
        let new = libc::rlimit {
            rlim_cur: soft.min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        // SAFETY: `new` is a valid rlimit; lowering the soft limit is allowed.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) }, 0);
        FdLimit(old)
    }
}

impl Drop for FdLimit {
    fn drop(&mut self) {
        // SAFETY: restores the limits read in `set`.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
    }
}

const N: usize = 100_000;

/// The child: checks a sample of the values and locks it was handed (and
/// writes some), and reports how many fds it has open.
fn check_sample((values, locks): (Vec<Value<i64>>, Vec<Lock>)) -> (usize, usize) {
    assert_eq!(values.len(), N);
    assert_eq!(locks.len(), N);
    let mut checked = 0;
    for i in (0..N).step_by(997) {
        assert_eq!(values[i].get().unwrap(), i as i64, "value #{i}");
        values[i].set(-(i as i64)).unwrap();
        assert!(locks[i].try_lock().is_ok(), "lock #{i} is free");
        checked += 1;
    }
    // The parent holds this one.
    assert!(matches!(locks[1].try_lock(), Err(TryLockError::WouldBlock)));
    (checked, common::open_fds())
}

fn hundred_thousand_values_and_locks_under_ulimit_1024(m: StartMethod) {
    common::allow_fork();
    let _limit = FdLimit::set(1024);
    let before = common::open_fds();
    let values: Vec<Value<i64>> = (0..N).map(|i| Value::new(i as i64).unwrap()).collect();
    let locks: Vec<Lock> = (0..N).map(|_| Lock::new().unwrap()).collect();
    let open = common::open_fds();
    assert!(
        open < 64,
        "{N} Values and {N} Locks keep {open} fds open ({before} before)"
    );
    let _held = locks[1].lock().unwrap();
    let mut child = Process::builder()
        .start_method(m)
        .target_with(check_sample, (values.clone(), locks.clone()));
    child.start().unwrap();
    let (checked, child_fds) = child.join_timeout(LONG).unwrap();
    assert_eq!(checked, N.div_ceil(997));
    assert!(child_fds < 64, "the child has {child_fds} fds open");
    for i in (0..N).step_by(997) {
        assert_eq!(
            values[i].get().unwrap(),
            -(i as i64),
            "written by the child"
        );
    }
    assert_eq!(values[N - 1].get().unwrap(), N as i64 - 1);
    assert!(common::open_fds() < 64);
}

#[test]
fn creating_and_dropping_a_million_values_keeps_the_mapping_bounded() {
    let keep = Value::new(0u64).unwrap();
    let mapped = common::arena_bytes();
    assert!(mapped > 0, "Values live in arenas");
    let fds = common::open_fds();
    for i in 0..1_000_000u64 {
        let v = Value::new(i).unwrap();
        if i % 100_000 == 0 {
            assert_eq!(v.get().unwrap(), i);
            *keep.lock().unwrap() += 1;
        }
    }
    assert_eq!(keep.get().unwrap(), 10);
    assert_eq!(common::arena_bytes(), mapped, "freed space is reused");
    assert_eq!(common::open_fds(), fds);
}

/// A forked child holds the last copy of a handle to its parent's object
/// and drops it: that space must not become the child's to hand out, for
/// the parent reuses it (here at once, for `reused`).
#[test]
fn a_forked_child_never_hands_out_its_parents_objects() {
    common::allow_fork();
    let go = brood::sync::Event::new().unwrap();
    let out = Value::new(0i64).unwrap();
    let doomed = Value::new(5i64).unwrap();
    let mut child = Process::fork({
        let (go, out) = (go.clone(), out.clone());
        move || {
            drop(doomed); // the child's only copy
            let mine = Value::new(99i64).unwrap();
            assert!(go.wait(Some(LONG)));
            out.set(mine.get().unwrap()).unwrap();
        }
    });
    child.start().unwrap();
    // The parent's copy of `doomed` went with the closure: its space is
    // free here, and the next Value takes it.
    drop(child);
    let reused = Value::new(7i64).unwrap();
    go.set();
    let deadline = std::time::Instant::now() + LONG;
    while out.get().unwrap() == 0 {
        assert!(std::time::Instant::now() < deadline, "the child answers");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(out.get().unwrap(), 99, "the child's object is its own");
    assert_eq!(reused.get().unwrap(), 7, "the parent's object is its own");
}

#[test]
fn small_arrays_share_arenas_and_large_ones_get_their_own_segment() {
    let fds = common::open_fds();
    let small: Vec<Array<u8>> = (0..1000).map(|_| Array::zeroed(1000).unwrap()).collect();
    assert!(
        common::open_fds() <= fds + 4,
        "1000 small arrays, a few arenas"
    );
    let large = Array::<u8>::zeroed(1 << 20).unwrap();
    assert_eq!(large.len(), 1 << 20);
    large.set((1 << 20) - 1, 7).unwrap();
    small[999].set(999, 8).unwrap();
    assert_eq!(large.get((1 << 20) - 1).unwrap(), 7);
    assert_eq!(small[999].get(999).unwrap(), 8);
}

/// Values sent over a connection in two messages: each message carries the
/// arena's fd once, and the receiver maps the arena once (the second fd is
/// closed unused).
fn values_over_a_connection_map_their_arena_once(m: StartMethod) {
    common::allow_fork();
    let (mut ours, theirs) = brood::pipe(true).unwrap();
    let mut child = Process::builder().start_method(m).target_with(
        |mut conn: brood::Connection| {
            let first: Vec<Value<u32>> = conn.recv().unwrap();
            let (maps, fds) = (arena_maps(), common::open_fds());
            let second: Vec<Value<u32>> = conn.recv().unwrap();
            let sum: u32 = first.iter().chain(&second).map(|v| v.get().unwrap()).sum();
            (sum, maps, arena_maps(), fds, common::open_fds())
        },
        theirs,
    );
    child.start().unwrap();
    let values: Vec<Value<u32>> = (0..2000).map(|i| Value::new(i).unwrap()).collect();
    ours.send(&values[..1000]).unwrap();
    ours.send(&values[1000..]).unwrap();
    let (sum, maps_before, maps_after, fds_before, fds_after) = child.join_timeout(LONG).unwrap();
    assert_eq!(sum, (0..2000).sum::<u32>());
    assert!(maps_before >= 1);
    assert_eq!(maps_after, maps_before, "the arena is mapped once");
    assert_eq!(fds_after, fds_before, "the second fd was closed unused");
}

/// Mappings of brood arenas in this process.
fn arena_maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:brood-arena"))
        .count()
}

suite!(
    hundred_thousand_values_and_locks_under_ulimit_1024,
    values_over_a_connection_map_their_arena_once,
    a_crossed_object_is_never_reused_under_its_holder,
);

/// A child holds the lock of an object its parent created, and the parent
/// drops its last handle and makes new objects: the space is not reused
/// under the child (whose robust list links into it), so the child
/// releases the lock it holds and finds its object as it left it.
fn a_crossed_object_is_never_reused_under_its_holder(m: StartMethod) {
    common::allow_fork();
    let held = brood::sync::Event::new().unwrap();
    let go = brood::sync::Event::new().unwrap();
    let lock = Value::new(41u64).unwrap();
    let mut child = Process::builder().start_method(m).target_with(
        |(value, held, go): (Value<u64>, brood::sync::Event, brood::sync::Event)| {
            let mut g = value.lock().unwrap();
            *g += 1;
            held.set();
            assert!(go.wait(Some(LONG)));
            let seen = *g;
            drop(g); // unlinks it from this thread's robust list
            (seen, value.get().unwrap())
        },
        (lock.clone(), held.clone(), go.clone()),
    );
    child.start().unwrap();
    assert!(held.wait(Some(LONG)));
    drop(lock);
    let fresh: Vec<Value<u64>> = (0..1000).map(|_| Value::new(7).unwrap()).collect();
    let locks: Vec<Lock> = (0..1000).map(|_| Lock::new().unwrap()).collect();
    for l in &locks {
        drop(l.lock().unwrap());
    }
    go.set();
    assert_eq!(child.join_timeout(LONG).unwrap(), (42, 42));
    assert!(fresh.iter().all(|v| v.get().unwrap() == 7));
}
