//! Shared memory life cycle: a failed create leaves nothing; a segment
//! handed from a child to its parent (join value, connection) stays usable
//! until received; one resource tracker per process tree, named
//! `brood-tracker` in `ps`; a killed tracker is replaced by one that knows
//! what it tracked.

#[macro_use]
mod common;

use common::{assert_unlinked_soon, builder, exists, unique_name};

use std::thread;
use std::time::{Duration, Instant};

use brood::StartMethod;
use brood::shm::SharedMemory;

const LONG: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// A failed create leaves nothing.

#[test]
fn a_create_that_fails_in_mmap_leaves_no_name_behind() {
    // 2^48 bytes: ftruncate on tmpfs takes it (sparse), mmap cannot.
    for track in [true, false] {
        let name = unique_name("huge");
        let err = SharedMemory::options()
            .name(&name)
            .size(1 << 48)
            .track(track)
            .create()
            .unwrap_err();
        assert!(err.io().is_some(), "an OS error: {err}");
        assert!(
            !exists(&name),
            "/dev/shm/{name} left behind (track {track})"
        );
        // The name is free again.
        let shm = SharedMemory::options()
            .name(&name)
            .size(8)
            .track(track)
            .create()
            .unwrap();
        shm.unlink().unwrap();
    }
    let err = SharedMemory::create(None, 1 << 48).unwrap_err();
    assert!(err.io().is_some());
}

#[test]
fn a_failed_anonymous_create_leaks_no_fd() {
    let before = common::open_fds();
    for _ in 0..50 {
        assert!(SharedMemory::new(1 << 48).is_err());
        assert!(SharedMemory::new(usize::MAX).is_err());
    }
    assert_eq!(common::open_fds(), before);
}

// ---------------------------------------------------------------------------
// A segment handed back by a child that then exits stays usable.

/// A child's work: creates `name`, writes `i` into it, returns it.
fn create_filled((name, i): (String, u32)) -> SharedMemory {
    let shm = SharedMemory::create(Some(&name), 64).unwrap();
    shm.write_at(0, &i.to_le_bytes()).unwrap();
    shm
}

/// A child's work: as [`create_filled`], but sends it over `tx` and exits.
fn send_filled((name, i, mut tx): (String, u32, brood::Connection)) {
    let shm = create_filled((name, i));
    tx.send(&shm).unwrap();
}

fn holds(shm: &SharedMemory, i: u32) -> bool {
    let mut buf = [0u8; 4];
    shm.read_at(0, &mut buf).is_ok() && u32::from_le_bytes(buf) == i
}

/// In a child of the test (so that its exit is the last user's): `tries`
/// children each create a segment, hand it back through `join`, then as
/// many through a connection, each exiting before the parent attaches.
/// Returns how many arrived usable each way.
fn hand_back((m, prefix, tries): (StartMethod, String, u32)) -> (u32, u32) {
    let mut by_join = 0;
    let mut by_connection = 0;
    for i in 0..tries {
        let mut p = builder(m).target_with(create_filled, (format!("{prefix}-j{i}"), i));
        p.start().unwrap();
        if let Ok(shm) = p.join_timeout(LONG) {
            by_join += u32::from(holds(&shm, i));
        }
    }
    for i in 0..tries {
        let (mut rx, tx) = brood::connection::pipe(false).unwrap();
        let mut p = builder(m).target_with(send_filled, (format!("{prefix}-c{i}"), i, tx));
        p.start().unwrap();
        // The sender has exited (and been reaped) before we receive.
        p.join_timeout(LONG).unwrap();
        if let Ok(shm) = rx.recv_timeout::<SharedMemory>(LONG) {
            by_connection += u32::from(holds(&shm, i));
        }
    }
    (by_join, by_connection)
}

fn segments_handed_back_by_exiting_children_are_usable(m: StartMethod) {
    let prefix = unique_name("back");
    let tries = 50;
    let mut middle = builder(m).target_with(hand_back, (m, prefix.clone(), tries));
    middle.start().unwrap();
    let (by_join, by_connection) = middle.join_timeout(Duration::from_secs(120)).unwrap();
    assert_eq!(
        (by_join, by_connection),
        (tries, tries),
        "usable of {tries} (join, connection) under {m}"
    );
    // Every user has exited: nothing is left behind.
    for i in 0..tries {
        assert_unlinked_soon(&format!("{prefix}-j{i}"));
        assert_unlinked_soon(&format!("{prefix}-c{i}"));
    }
}

/// A handle that is never received does not keep its segment past the
/// tree: the child's copy is gone with the child, the pin with the tree.
#[test]
fn a_handle_never_received_is_unlinked_when_its_tree_ends() {
    if std::env::var_os(TAG).is_some() {
        return;
    }
    let tag = unique_name("unreceived");
    run_scenario("scenario_unreceived_handle", &tag);
    assert_unlinked_soon(&format!("{tag}-lost"));
}

#[test]
fn scenario_unreceived_handle() {
    let Some(tag) = scenario_tag() else { return };
    let (rx, tx) = brood::connection::pipe(false).unwrap();
    let mut p =
        builder(StartMethod::Spawn).target_with(send_filled, (format!("{tag}-lost"), 7, tx));
    p.start().unwrap();
    p.join_timeout(LONG).unwrap();
    drop(rx);
    // Pinned while this tree lives: no one may unlink it under a receiver.
    thread::sleep(Duration::from_millis(200));
    assert!(exists(&format!("{tag}-lost")));
}

// ---------------------------------------------------------------------------
// One tracker per process tree, named in `ps`, replaced without forgetting.
//
// Each scenario runs in a fresh copy of this test binary whose environment
// carries a tag; the trackers it starts inherit that environment, which
// tells them from the trackers of tests running in parallel.

const TAG: &str = "BROOD_TRACKER_TEST_TAG";

fn scenario_tag() -> Option<String> {
    std::env::var(TAG).ok()
}

fn run_scenario(test: &str, tag: &str) {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(TAG, tag)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{test} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pids of the processes named `comm` whose environment carries our tag.
fn tagged(comm: &str, tag: &str) -> Vec<i32> {
    let needle = format!("{TAG}={tag}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if name.trim_end() != comm {
            continue;
        }
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// Waits (10 s at most) until exactly `n` tagged trackers run; their pids.
fn trackers(tag: &str, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + LONG;
    loop {
        let found = tagged("brood-tracker", tag);
        if found.len() == n || Instant::now() > deadline {
            assert_eq!(found.len(), n, "tagged brood-tracker processes: {found:?}");
            return found;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn one_named_tracker_serves_a_tree_of_spawn_and_forkserver_children() {
    if std::env::var_os(TAG).is_some() {
        return;
    }
    let tag = unique_name("tree");
    run_scenario("scenario_one_tracker_per_tree", &tag);
    assert_unlinked_soon(&format!("{tag}-shared"));
}

/// A child's work: attaches to `shm` (its argument), says so, waits for go.
fn attach_and_wait((shm, ready, go): (SharedMemory, brood::sync::Semaphore, brood::sync::Event)) {
    assert!(holds(&shm, 42));
    ready.release().unwrap();
    assert!(go.wait(Some(LONG)));
}

#[test]
fn scenario_one_tracker_per_tree() {
    let Some(tag) = scenario_tag() else { return };
    let shm = SharedMemory::create(Some(&format!("{tag}-shared")), 64).unwrap();
    shm.write_at(0, &42u32.to_le_bytes()).unwrap();
    let first = trackers(&tag, 1);
    assert_eq!(tagged("brood-trkguard", &tag).len(), 1);
    let ready = brood::sync::Semaphore::new(0).unwrap();
    let go = brood::sync::Event::new().unwrap();
    let mut kids = Vec::new();
    for m in [
        StartMethod::Spawn,
        StartMethod::ForkServer,
        StartMethod::Fork,
    ] {
        for _ in 0..4 {
            let mut p =
                builder(m).target_with(attach_and_wait, (shm.clone(), ready.clone(), go.clone()));
            p.start().unwrap();
            kids.push(p);
        }
    }
    for _ in &kids {
        assert!(ready.acquire(true, Some(LONG)));
    }
    // Twelve children attached: still the one tracker.
    assert_eq!(trackers(&tag, 1), first);
    go.set();
    for mut p in kids {
        p.join_timeout(LONG).unwrap();
    }
}

#[test]
fn a_killed_tracker_is_replaced_and_forgets_nothing() {
    if std::env::var_os(TAG).is_some() {
        return;
    }
    let tag = unique_name("killed");
    run_scenario("scenario_killed_tracker", &tag);
    for i in 0..3 {
        assert_unlinked_soon(&format!("{tag}-held-{i}"));
        assert_unlinked_soon(&format!("{tag}-mine-{i}"));
    }
}

/// A child's work: creates `names`, says so, holds them until go.
fn create_and_hold((names, ready, go): (Vec<String>, brood::sync::Semaphore, brood::sync::Event)) {
    let held: Vec<SharedMemory> = names
        .iter()
        .map(|n| SharedMemory::create(Some(n), 64).unwrap())
        .collect();
    ready.release().unwrap();
    assert!(go.wait(Some(LONG)));
    drop(held);
}

#[test]
fn scenario_killed_tracker() {
    let Some(tag) = scenario_tag() else { return };
    // Segments this process holds until it exits, and segments a child
    // holds until told to let go.
    let mine: Vec<SharedMemory> = (0..3)
        .map(|i| SharedMemory::create(Some(&format!("{tag}-mine-{i}")), 64).unwrap())
        .collect();
    let held: Vec<String> = (0..3).map(|i| format!("{tag}-held-{i}")).collect();
    let ready = brood::sync::Semaphore::new(0).unwrap();
    let go = brood::sync::Event::new().unwrap();
    let mut child = builder(StartMethod::Spawn)
        .target_with(create_and_hold, (held.clone(), ready.clone(), go.clone()));
    child.start().unwrap();
    assert!(ready.acquire(true, Some(LONG)));
    // Killed twice: the first replacement learns from the log of messages,
    // the second from the snapshot the first one wrote.
    for _ in 0..2 {
        let old = trackers(&tag, 1)[0];
        // SAFETY: kill(2) on a pid we just read; it touches no memory.
        assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0);
        // A new worker takes over.
        let deadline = Instant::now() + LONG;
        while tagged("brood-tracker", &tag) == [old] || tagged("brood-tracker", &tag).is_empty() {
            assert!(Instant::now() < deadline, "no new tracker after the kill");
            thread::sleep(Duration::from_millis(10));
        }
    }
    // The child lets go and exits: its segments go, though no live process
    // told the new worker about them.
    go.set();
    child.join_timeout(LONG).unwrap();
    for n in &held {
        assert_unlinked_soon(n);
    }
    for shm in &mine {
        assert!(exists(shm.name().unwrap()), "unlinked under a live user");
    }
    // Ours go once this process exits (checked by the test that ran us).
}

suite!(segments_handed_back_by_exiting_children_are_usable);
