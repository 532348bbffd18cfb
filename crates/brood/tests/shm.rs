//! Shared memory: segments (anonymous and named) and `Value`/`Array` across
//! every start method; Python attaching to brood's segments and the
//! reverse; and the resource tracker: a named segment is unlinked once no
//! brood process that created or attached to it is alive — after a normal
//! exit and after SIGKILL — and never under a live user.
//!
//! Every test that names a segment uses a name with this process's pid and
//! removes what it expects to outlive it, so the suite leaves nothing in
//! /dev/shm.

#[macro_use]
mod common;

use common::{assert_unlinked_soon, builder, exists, unique_name};

use std::thread;
use std::time::Duration;

use brood::StartMethod;
use brood::shm::{Array, RawArray, RawValue, SharedMemory, Typecode, Value};
use brood::sync::Event;

const LONG: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Segments.

#[test]
fn anonymous_segment_reads_and_writes() {
    let shm = SharedMemory::new(4096).unwrap();
    assert_eq!(shm.len(), 4096);
    assert!(shm.name().is_none());
    shm.write_at(4090, b"edge!!").unwrap();
    let mut buf = [0u8; 6];
    shm.read_at(4090, &mut buf).unwrap();
    assert_eq!(&buf, b"edge!!");
    assert!(shm.write_at(4091, b"edge!!").is_err());
    assert!(shm.read_at(usize::MAX, &mut buf).is_err());
    assert!(SharedMemory::new(0).is_err());
    shm.unlink().unwrap(); // nothing to unlink: fine
}

#[test]
fn named_segment_create_open_unlink() {
    let name = unique_name("named");
    let shm = SharedMemory::create(Some(&name), 100).unwrap();
    assert_eq!(shm.name(), Some(name.as_str()));
    assert!(shm.is_tracked());
    assert!(exists(&name));
    // Creating it again is an error, as in Python.
    let again = SharedMemory::create(Some(&name), 100).unwrap_err();
    assert_eq!(again.io().unwrap().raw_os_error(), Some(libc::EEXIST));
    // A leading slash names the same segment.
    let other = SharedMemory::open(&format!("/{name}")).unwrap();
    assert_eq!(other.len(), 100);
    other.write_at(0, b"shared").unwrap();
    let mut buf = [0u8; 6];
    shm.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"shared");
    shm.unlink().unwrap();
    assert!(!exists(&name));
    let gone = SharedMemory::open(&name).unwrap_err();
    assert_eq!(gone.io().unwrap().kind(), std::io::ErrorKind::NotFound);
    // Still mapped after unlink.
    other.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"shared");
}

#[test]
fn bad_names_are_refused() {
    for bad in ["", "/", "a/b", "/a/b"] {
        assert!(SharedMemory::create(Some(bad), 8).is_err(), "{bad:?}");
    }
}

#[test]
fn random_names_look_like_pythons() {
    let shm = SharedMemory::create(None, 8).unwrap();
    let name = shm.name().unwrap().to_string();
    assert!(name.starts_with("brood_") && name.len() == 14, "{name}");
    shm.unlink().unwrap();
}

fn segments_cross_to_children(m: StartMethod) {
    let anon = SharedMemory::new(64).unwrap();
    let name = unique_name("cross");
    let named = SharedMemory::create(Some(&name), 64).unwrap();
    anon.write_at(0, b"anon").unwrap();
    named.write_at(0, b"named").unwrap();
    let mut child = builder(m).target_with(
        |(a, n): (SharedMemory, SharedMemory)| {
            let mut buf = [0u8; 5];
            a.read_at(0, &mut buf[..4]).unwrap();
            let first = String::from_utf8_lossy(&buf[..4]).into_owned();
            n.read_at(0, &mut buf).unwrap();
            let second = String::from_utf8_lossy(&buf).into_owned();
            a.write_at(8, b"child").unwrap();
            n.write_at(8, b"child").unwrap();
            (first, second, n.name().map(str::to_string))
        },
        (anon.clone(), named.clone()),
    );
    child.start().unwrap();
    let (first, second, child_name) = child.join_timeout(LONG).unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("anon", "named"));
    assert_eq!(child_name.as_deref(), Some(name.as_str()));
    let mut buf = [0u8; 5];
    anon.read_at(8, &mut buf).unwrap();
    assert_eq!(&buf, b"child");
    named.read_at(8, &mut buf).unwrap();
    assert_eq!(&buf, b"child");
    // The child's exit did not take the segment away from us.
    assert!(exists(&name));
    named.unlink().unwrap();
}

// ---------------------------------------------------------------------------
// Value, Array, RawValue, RawArray.

#[test]
fn typecodes_match_pythons() {
    let table: [(char, usize); 13] = [
        ('b', 1),
        ('B', 1),
        ('h', 2),
        ('H', 2),
        ('i', 4),
        ('I', 4),
        ('l', 8),
        ('L', 8),
        ('q', 8),
        ('Q', 8),
        ('f', 4),
        ('d', 8),
        ('c', 1),
    ];
    for (c, size) in table {
        let code = Typecode::try_from(c).unwrap();
        assert_eq!(code.as_char(), c);
        assert_eq!(code.size(), size, "{c}");
    }
    assert!(Value::with_typecode('i', 1i32).is_ok());
    assert!(Value::with_typecode('I', 1i32).is_err());
    assert!(Value::with_typecode('c', b'x').is_ok());
    assert!(Array::with_typecode('d', &[1.0f64, 2.0]).is_ok());
    assert!(Array::with_typecode('f', &[1.0f64]).is_err());
    assert!(RawValue::with_typecode('q', 1i64).is_ok());
    assert!(RawArray::with_typecode('H', &[1u16]).is_ok());
    assert!(Value::with_typecode('z', 1u8).is_err());
}

#[test]
fn raw_values_of_odd_sizes() {
    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(C)]
    struct Point {
        x: f32,
        y: f32,
        z: f32,
    }
    // SAFETY: three f32s, no padding.
    unsafe impl brood::shm::Zeroable for Point {}
    // SAFETY: as above: every bit pattern is valid, no padding.
    unsafe impl brood::shm::Pod for Point {}
    let p = Point {
        x: 1.0,
        y: 2.0,
        z: 3.0,
    };
    let v = RawValue::new(p).unwrap();
    assert_eq!(v.get(), p);
    let a = Array::new(&[p, p]).unwrap();
    a.lock().unwrap()[1].z = 9.0;
    assert_eq!(a.get(1).unwrap().z, 9.0);
    assert!(a.get(2).is_err());
    assert_eq!(a.typecode(), None);
    let bytes = RawArray::new(&[[1u8, 2, 3], [4, 5, 6]]).unwrap();
    bytes.set(1, [7, 8, 9]).unwrap();
    assert_eq!(bytes.to_vec(), [[1, 2, 3], [7, 8, 9]]);
}

fn value_counts_across_processes(m: StartMethod) {
    // The tutorial's example: several processes add to one shared counter.
    let counter = Value::with_typecode('i', 0i32).unwrap();
    let mut kids: Vec<_> = (0..4)
        .map(|_| {
            builder(m).target_with(
                |c: Value<i32>| {
                    for _ in 0..250 {
                        *c.lock().unwrap() += 1;
                    }
                },
                counter.clone(),
            )
        })
        .collect();
    for k in &mut kids {
        k.start().unwrap();
    }
    for k in &mut kids {
        k.join_timeout(LONG).unwrap();
    }
    assert_eq!(counter.get().unwrap(), 1000);
}

fn arrays_cross_to_children(m: StartMethod) {
    let locked = Array::<f64>::zeroed(5).unwrap();
    let raw = RawArray::new(&[1u16, 2, 3]).unwrap();
    let value = RawValue::new(0u64).unwrap();
    let mut child = builder(m).target_with(
        |(locked, raw, value): (Array<f64>, RawArray<u16>, RawValue<u64>)| {
            for (i, x) in locked.lock().unwrap().iter_mut().enumerate() {
                *x = i as f64 / 2.0;
            }
            let sum: u16 = raw.to_vec().iter().sum();
            raw.set(0, sum).unwrap();
            value.set(u64::MAX);
            (locked.len(), raw.len())
        },
        (locked.clone(), raw.clone(), value.clone()),
    );
    child.start().unwrap();
    assert_eq!(child.join_timeout(LONG).unwrap(), (5, 3));
    assert_eq!(locked.to_vec().unwrap(), [0.0, 0.5, 1.0, 1.5, 2.0]);
    assert_eq!(raw.to_vec(), [6, 2, 3]);
    assert_eq!(value.get(), u64::MAX);
}

// ---------------------------------------------------------------------------
// Python interop.

/// `python3`, which the test command requires (README): a missing one
/// fails these tests rather than skipping them.
fn python() -> std::process::Command {
    let ok = std::process::Command::new("python3")
        .arg("-c")
        .arg("import multiprocessing.shared_memory")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 with multiprocessing.shared_memory is required for the interop tests (see README)"
    );
    std::process::Command::new("python3")
}

#[test]
fn python_attaches_to_a_brood_segment() {
    let mut py = python();
    let shm = SharedMemory::create(None, 64).unwrap();
    shm.write_at(0, b"written by rust").unwrap();
    let script = r#"
import sys
from multiprocessing import shared_memory, resource_tracker
shm = shared_memory.SharedMemory(name=sys.argv[1])
# Python 3.11's tracker would unlink a segment it merely attached to.
resource_tracker.unregister(shm._name, "shared_memory")
print(bytes(shm.buf[:15]).decode(), shm.size)
shm.buf[16:33] = b"written by python"
shm.close()
"#;
    let out = py
        .arg("-c")
        .arg(script)
        .arg(shm.name().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "written by rust 64"
    );
    let mut buf = [0u8; 17];
    shm.read_at(16, &mut buf).unwrap();
    assert_eq!(&buf, b"written by python");
    assert!(
        exists(shm.name().unwrap()),
        "Python must not have unlinked it"
    );
    shm.unlink().unwrap();
}

#[test]
fn brood_attaches_to_a_python_segment() {
    let mut py = python();
    let name = unique_name("py");
    let script = r#"
import sys
from multiprocessing import shared_memory, resource_tracker
shm = shared_memory.SharedMemory(name=sys.argv[1], create=True, size=32)
resource_tracker.unregister(shm._name, "shared_memory")
shm.buf[:17] = b"written by python"
shm.close()
"#;
    let out = py.arg("-c").arg(script).arg(&name).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shm = SharedMemory::open(&name).unwrap();
    assert_eq!(shm.len(), 32);
    assert!(!shm.is_tracked(), "a Python segment is Python's to unlink");
    let mut buf = [0u8; 17];
    shm.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"written by python");
    shm.unlink().unwrap();
}

// ---------------------------------------------------------------------------
// The resource tracker.

/// A child that creates `name`, says so, and sleeps until killed.
fn create_and_sleep((name, created): (String, Event)) {
    let shm = SharedMemory::create(Some(&name), 4096).unwrap();
    shm.write_at(0, b"alive").unwrap();
    created.set();
    thread::sleep(LONG);
    drop(shm);
}

fn sigkilled_creator_leaves_no_segment(m: StartMethod) {
    let name = unique_name("killed");
    let created = Event::new().unwrap();
    let mut child = builder(m).target_with(create_and_sleep, (name.clone(), created.clone()));
    child.start().unwrap();
    assert!(created.wait(Some(LONG)));
    assert!(exists(&name));
    child.kill().unwrap();
    assert_eq!(child.join_timeout(LONG).unwrap_err().signal(), Some(9));
    assert_unlinked_soon(&name);
}

fn exiting_creator_leaves_no_segment(m: StartMethod) {
    let names = [unique_name("exit"), unique_name("exit")];
    let mut child = builder(m).target_with(
        |names: [String; 2]| {
            // Created and dropped without unlink: Python would leak these.
            for n in &names {
                SharedMemory::create(Some(n), 100).unwrap();
            }
        },
        names.clone(),
    );
    child.start().unwrap();
    child.join_timeout(LONG).unwrap();
    for n in &names {
        assert_unlinked_soon(n);
    }
}

fn a_live_attacher_keeps_the_segment(m: StartMethod) {
    let name = unique_name("attached");
    let created = Event::new().unwrap();
    let mut child = builder(m).target_with(create_and_sleep, (name.clone(), created.clone()));
    child.start().unwrap();
    assert!(created.wait(Some(LONG)));
    let mine = SharedMemory::open(&name).unwrap();
    assert!(mine.is_tracked());
    child.kill().unwrap();
    let _ = child.join_timeout(LONG);
    // Python's tracker would unlink it now, under our feet.
    thread::sleep(Duration::from_millis(300));
    assert!(exists(&name), "unlinked while a user is alive");
    let again = SharedMemory::open(&name).unwrap();
    let mut buf = [0u8; 5];
    again.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"alive");
    drop(again);
    mine.unlink().unwrap();
}

fn an_attaching_child_outliving_the_creator_cleans_up(m: StartMethod) {
    // Creator and attacher are both children; the creator dies first, the
    // segment survives; the attacher exits, the segment goes.
    let name = unique_name("relay");
    let created = Event::new().unwrap();
    let attached = Event::new().unwrap();
    let go = Event::new().unwrap();
    let mut creator = builder(m).target_with(create_and_sleep, (name.clone(), created.clone()));
    creator.start().unwrap();
    assert!(created.wait(Some(LONG)));
    let mut attacher = builder(m).target_with(
        |(name, attached, go): (String, Event, Event)| {
            let shm = SharedMemory::open(&name).unwrap();
            attached.set();
            go.wait(Some(LONG));
            let mut buf = [0u8; 5];
            shm.read_at(0, &mut buf).unwrap();
            buf == *b"alive"
        },
        (name.clone(), attached.clone(), go.clone()),
    );
    attacher.start().unwrap();
    assert!(attached.wait(Some(LONG)));
    creator.kill().unwrap();
    let _ = creator.join_timeout(LONG);
    thread::sleep(Duration::from_millis(200));
    assert!(exists(&name), "unlinked while the attacher is alive");
    go.set();
    assert!(attacher.join_timeout(LONG).unwrap());
    assert_unlinked_soon(&name);
}

fn untracked_segments_outlive_their_creator(m: StartMethod) {
    let name = unique_name("untracked");
    let mut child = builder(m).target_with(
        |name: String| {
            let shm = SharedMemory::options()
                .name(&name)
                .size(8)
                .track(false)
                .create()
                .unwrap();
            shm.is_tracked()
        },
        name.clone(),
    );
    child.start().unwrap();
    assert!(!child.join_timeout(LONG).unwrap());
    thread::sleep(Duration::from_millis(200));
    assert!(
        exists(&name),
        "an untracked segment is the user's to unlink"
    );
    let shm = SharedMemory::open(&name).unwrap();
    assert!(!shm.is_tracked());
    shm.unlink().unwrap();
}

#[test]
fn a_whole_program_leaves_no_segment_behind() {
    // This test binary, run again as a child that creates tracked segments
    // and exits without unlinking them: its tracker removes them.
    if std::env::var_os("BROOD_SHM_TEST_CHILD").is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let prefix = unique_name("program");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "program_child_creates_segments",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BROOD_SHM_TEST_CHILD", &prefix)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // The child test ran (not filtered away) and made every segment.
    assert!(stdout.contains("1 passed"), "{stdout}");
    for i in 0..3 {
        let name = format!("{prefix}-{i}");
        assert!(
            stdout.contains(&format!("created {name}\n")),
            "the child did not create {name}: {stdout}"
        );
        assert_unlinked_soon(&name);
    }
}

#[test]
fn program_child_creates_segments() {
    let Some(prefix) = std::env::var_os("BROOD_SHM_TEST_CHILD") else {
        return;
    };
    let prefix = prefix.into_string().unwrap();
    let mut keep = Vec::new();
    for i in 0..3 {
        let shm = SharedMemory::create(Some(&format!("{prefix}-{i}")), 64).unwrap();
        assert!(exists(shm.name().unwrap()));
        println!("created {}", shm.name().unwrap());
        keep.push(shm);
    }
    // Leaves with the segments mapped and named.
    std::mem::forget(keep);
}

suite!(
    segments_cross_to_children,
    value_counts_across_processes,
    arrays_cross_to_children,
    sigkilled_creator_leaves_no_segment,
    exiting_creator_leaves_no_segment,
    a_live_attacher_keeps_the_segment,
    an_attaching_child_outliving_the_creator_cleans_up,
    untracked_segments_outlive_their_creator,
);
