//! The fork launcher's lean path, in a program that never runs a second
//! thread (this binary has no test harness, so `main` is the only thread,
//! as in most programs that fork): no locks held across the fork, no frame
//! for a `()` result, one result pipe reused from child to child. Every
//! outcome a child can have is checked through it, and the same checks run
//! under spawn and forkserver, which always send a frame.

use std::time::Duration;

use brood::os::{self, ExitStatus};
use brood::{Process, StartMethod};

const TESTS: &[&str] = &[
    "unit_results_exit_codes_and_panics_under_every_start_method",
    "unit_results_with_sigchld_ignored",
    "a_reused_pipe_carries_no_stale_bytes_and_leaks_no_fd",
    "a_process_the_function_forks_and_lets_return_sends_no_frame",
    "values_of_every_encoded_length_come_back_whole",
];

fn main() {
    // Speak just enough of libtest's command line for cargo-nextest.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            for t in TESTS {
                println!("{t}: test");
            }
        }
        return;
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-'));
    assert_eq!(threads(), 1, "this binary must stay single-threaded");
    for &t in TESTS {
        if filter.is_some_and(|f| !t.contains(f.as_str())) {
            continue;
        }
        match t {
            "unit_results_exit_codes_and_panics_under_every_start_method" => {
                for m in StartMethod::ALL {
                    unit_results(m);
                }
            }
            "unit_results_with_sigchld_ignored" => unit_results_with_sigchld_ignored(),
            "a_reused_pipe_carries_no_stale_bytes_and_leaks_no_fd" => reused_pipe(),
            "a_process_the_function_forks_and_lets_return_sends_no_frame" => forked_and_returned(),
            "values_of_every_encoded_length_come_back_whole" => values_of_every_length(),
            _ => unreachable!(),
        }
        // The lean path is the one under test: still one thread.
        assert_eq!(threads(), 1, "{t} started a thread");
        println!("test {t} ... ok");
    }
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Marker;

fn unit_results(m: StartMethod) {
    let b = || Process::builder().start_method(m);

    // Returned `()`: success, exit code 0.
    let mut p = b().target(|| ());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (), "{m}");
    assert_eq!(p.exitcode(), Some(0), "{m}");

    // A unit struct (zero-sized, encoded as nil) comes back too.
    let mut p = b().target(|| Marker);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), Marker, "{m}");

    // `None` is nil too, but not zero-sized: it always travels in a frame.
    let mut p = b().target(|| Option::<u64>::None);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), None, "{m}");

    // A panic in a `()` function: the report, exit code 1.
    let mut p = b().target(|| -> () { panic!("unit panic") });
    p.start().unwrap();
    let err = p.join().unwrap_err();
    assert_eq!(err.panic().unwrap().message, "unit panic", "{m}");
    assert_eq!(p.exitcode(), Some(1), "{m}");

    // An early exit with a code: that code, no value.
    let mut p = b().target(|| -> () { os::exit_now(3) });
    p.start().unwrap();
    let err = p.join().unwrap_err();
    assert_eq!(err.exit_code(), Some(3), "{m}");
    assert_eq!(p.exitcode(), Some(3), "{m}");

    // Killed by a signal while running: the signal, no value.
    let mut p = b().target(|| std::thread::sleep(Duration::from_secs(30)));
    p.start().unwrap();
    p.kill().unwrap();
    assert_eq!(p.join().unwrap_err().signal(), Some(libc::SIGKILL), "{m}");
    assert_eq!(p.exitcode(), Some(-libc::SIGKILL), "{m}");

    // A `u64` function that leaves with exit code 0 before returning sent
    // no value: an error, as before (only zero-sized values go without a
    // frame).
    let mut p = b().target(|| -> u64 { os::exit_now(0) });
    p.start().unwrap();
    let err = p.join().unwrap_err();
    assert_eq!(err.exit_code(), Some(0), "{m}");
    assert_eq!(p.status(), Some(ExitStatus::Exited(0)), "{m}");

    // A `()` function that leaves with exit code 0 ends as Python's would:
    // exit code 0, nothing to report.
    let mut p = b().target(|| -> () { os::exit_now(0) });
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (), "{m}");
    assert_eq!(p.exitcode(), Some(0), "{m}");

    // Capturing closures (fork only) take the same path.
    if m == StartMethod::Fork {
        // The forkserver client this process holds (started above, under
        // ForkServer) is closed in a forked child without its lock; the
        // child can still start its own forkserver children.
        let mut warm = Process::builder()
            .start_method(StartMethod::ForkServer)
            .target(|| ());
        warm.start().unwrap();
        warm.join().unwrap();
        let mut p = Process::fork(|| {
            let mut g = Process::builder()
                .start_method(StartMethod::ForkServer)
                .target_with(|x: u32| x + 1, 41);
            g.start().unwrap();
            g.join().unwrap()
        });
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 42);
        let n = String::from("captured");
        let mut p = Process::fork(move || assert_eq!(n, "captured"));
        p.start().unwrap();
        p.join().unwrap();
        let mut p = Process::fork(|| -> () { panic!("closure panic") });
        p.start().unwrap();
        let err = p.join().unwrap_err();
        assert_eq!(err.panic().unwrap().message, "closure panic");
    }
}

/// With SIGCHLD ignored the exit status cannot be read back, so a `()`
/// child sends its frame after all: join still says it returned.
fn unit_results_with_sigchld_ignored() {
    os::ignore_children().unwrap();
    for m in [StartMethod::Fork, StartMethod::Spawn] {
        let mut p = Process::builder().start_method(m).target(|| ());
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), (), "{m}");
        let mut p = Process::builder()
            .start_method(m)
            .target(|| -> () { panic!("ignored parent") });
        p.start().unwrap();
        assert_eq!(
            p.join().unwrap_err().panic().unwrap().message,
            "ignored parent",
            "{m}"
        );
    }
    os::default_children().unwrap();
}

/// The fork launcher reuses a joined child's pipe. A child killed in the
/// middle of a large frame leaves bytes the parent drains; the next child's
/// value must still come back exact, values must never cross between
/// children, and the fd count must not grow.
fn reused_pipe() {
    let run = |i: u64| {
        let mut p = Process::builder()
            .start_method(StartMethod::Fork)
            .target_with(|i: u64| i * 3, i);
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), i * 3);
    };
    run(0);
    let before = open_fds();
    for round in 0..8u64 {
        run(round);
        // A child killed while it blocks writing 4 MiB (the parent does not
        // read until join): a partial frame in the pipe.
        let mut big = Process::builder()
            .start_method(StartMethod::Fork)
            .target(|| vec![7u8; 4 << 20]);
        big.start().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        big.kill().unwrap();
        let err = big.join().unwrap_err();
        assert_eq!(err.signal(), Some(libc::SIGKILL), "round {round}");
        // A whole large value, then small ones.
        let mut whole = Process::builder()
            .start_method(StartMethod::Fork)
            .target_with(|n: usize| vec![round_byte(n); n], 1 << 20);
        whole.start().unwrap();
        assert_eq!(whole.join().unwrap(), vec![round_byte(1 << 20); 1 << 20]);
        let mut unit = Process::builder()
            .start_method(StartMethod::Fork)
            .target(|| ());
        unit.start().unwrap();
        unit.join().unwrap();
        run(round + 1000);
        // Two children at once: two pipes, each its own value.
        let mut a = Process::builder()
            .start_method(StartMethod::Fork)
            .target_with(|i: u64| i, 1);
        let mut b = Process::builder()
            .start_method(StartMethod::Fork)
            .target_with(|i: u64| i, 2);
        a.start().unwrap();
        b.start().unwrap();
        assert_eq!((b.join().unwrap(), a.join().unwrap()), (2, 1));
        // Reaped but dropped without a join: its pipe (which may hold its
        // frame) is closed, not reused. (Reaped first: dropping a running
        // child would start the reaper thread.)
        let mut dropped = Process::builder()
            .start_method(StartMethod::Fork)
            .target_with(|i: u64| i, 9);
        dropped.start().unwrap();
        while dropped.is_alive() {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(dropped);
        run(round + 2000);
    }
    assert!(
        open_fds() <= before + 2,
        "fds grew from {before} to {}",
        open_fds()
    );
}

fn round_byte(n: usize) -> u8 {
    (n % 251) as u8
}

/// A function that forks (misuse: `os::fork` asks the new process to end
/// with `exit_now`) and lets the new process return too: only the child
/// brood started sends a frame. The other one returns later, when the
/// parent has reused the pipe for other children; their values must stay
/// exact.
fn forked_and_returned() {
    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .target(|| -> u64 {
            // SAFETY: this binary's children are single-threaded.
            match unsafe { os::fork() }.unwrap() {
                os::ForkResult::Child => {
                    // Returns after the brood child has been joined.
                    std::thread::sleep(Duration::from_millis(150));
                    666
                }
                os::ForkResult::Parent { .. } => 5,
            }
        });
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 5);
    let until = std::time::Instant::now() + Duration::from_millis(600);
    let mut i = 0u64;
    while std::time::Instant::now() < until {
        let mut q = Process::builder()
            .start_method(StartMethod::Fork)
            .target_with(|i: u64| i, i);
        q.start().unwrap();
        assert_eq!(q.join().unwrap(), i, "a stray frame reached child {i}");
        let mut u = Process::builder()
            .start_method(StartMethod::Fork)
            .target(|| ());
        u.start().unwrap();
        u.join().unwrap();
        i += 1;
    }
}

/// A forked closure's value is encoded in place when it fits beside the
/// frame's header in 64 bytes (no allocation in the child) and on the heap
/// otherwise: every encoded length across that boundary, and far past the
/// pipe's capacity, comes back whole; a value whose encoding fails says why
/// whether it fails in place or on the heap.
fn values_of_every_length() {
    fn round_trip<R>(value: R)
    where
        R: serde::Serialize
            + serde::de::DeserializeOwned
            + PartialEq
            + std::fmt::Debug
            + Clone
            + Send
            + 'static,
    {
        let sent = value.clone();
        let mut p = Process::fork(move || sent);
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), value);
        assert_eq!(p.exitcode(), Some(0));
    }
    // Strings: a 1-, 2- or 3-byte header and the bytes (lengths 0..=80
    // cover every encoded length from 1 to 83).
    for n in (0..=80).chain([255, 256, 1000, 65_535, 65_536, 300_000]) {
        round_trip(
            (0..n)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect::<String>(),
        );
    }
    // Numbers of every width the codec writes (1, 2, 3, 5 and 9 bytes), in
    // arrays whose encodings cross the in-place limit.
    for k in 0..=8 {
        round_trip(vec![u64::MAX; k]);
        round_trip(vec![u32::MAX; k * 2]);
        round_trip(vec![u16::MAX; k * 3]);
        round_trip(vec![-1i8; k * 9]);
        round_trip(vec![200u8; k * 7]);
    }
    round_trip(u64::MAX);
    round_trip(-1.5f64);
    round_trip((
        7u8,
        String::from("seven"),
        vec![1u32, 70_000, 4_000_000_000],
    ));
    round_trip(Some(Named {
        id: 42,
        label: "a struct with named fields".into(),
    }));
    // A value that cannot be encoded: in place (it fails at once) and past
    // the in-place limit (it fails after writing 100 bytes).
    for after in [0usize, 100] {
        let mut p = Process::fork(move || Refuses(after));
        p.start().unwrap();
        let err = p.join().unwrap_err();
        assert_eq!(err.kind(), brood::ErrorKind::Codec, "{err}");
        assert!(err.to_string().contains("refused on purpose"), "{err}");
        assert_eq!(p.exitcode(), Some(1));
    }
}

#[derive(Debug, PartialEq, Clone, serde::Serialize, serde::Deserialize)]
struct Named {
    id: u32,
    label: String,
}

/// Encodes `.0` bytes, then fails.
#[derive(Debug, serde::Deserialize)]
struct Refuses(usize);

impl serde::Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(None)?;
        for _ in 0..self.0 {
            seq.serialize_element(&1u8)?;
        }
        Err(S::Error::custom("refused on purpose"))
    }
}
