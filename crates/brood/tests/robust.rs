//! Failures on the way in and out of a child: a start that fails can be
//! retried, and what a child leaves at exit (buffered output, exit hooks)
//! is handled as documented.

#[macro_use]
mod common;

use brood::{Connection, ErrorKind, Process, StartMethod};

/// Lowers this process's fd limit to its lowest free fd, so the next fd it
/// asks for fails with EMFILE; returns the limit to restore.
fn fill_fd_table() -> libc::rlimit {
    // SAFETY: dup/close of fd 0, get/setrlimit with valid structs.
    unsafe {
        let lowest = libc::dup(0);
        assert!(lowest >= 0);
        libc::close(lowest);
        let mut old: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
        let full = libc::rlimit {
            rlim_cur: lowest as libc::rlim_t,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &full), 0);
        old
    }
}

fn restore_fd_limit(old: libc::rlimit) {
    // SAFETY: setrlimit with a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) }, 0);
}

/// A start that fails (here: no fd left for the result pipe) leaves the
/// process startable with its function and arguments, an fd among them;
/// once fds are free again the same object starts and returns. Run in a
/// spawned child, so the fd limit of the test process is never touched.
fn a_failed_start_can_be_retried(m: StartMethod) {
    let mut outer = Process::builder()
        .start_method(StartMethod::Spawn)
        .target_with(
            |m: StartMethod| -> (String, String, String, u64) {
                let (mut ours, theirs) = brood::pipe(true).unwrap();
                let mut p = Process::builder().start_method(m).target_with(
                    |(mut c, n): (Connection, u64)| {
                        c.send(&"hello from the retried child").unwrap();
                        n * 2
                    },
                    (theirs, 21u64),
                );
                let old = fill_fd_table();
                let first = p.start().unwrap_err();
                restore_fd_limit(old);
                let before = match p.join() {
                    Ok(_) => "joined a process that never started".to_string(),
                    Err(e) => format!("{:?}", e.kind()),
                };
                p.start().unwrap();
                let said: String = ours.recv().unwrap();
                let value = p.join().unwrap();
                (format!("{:?}: {first}", first.kind()), before, said, value)
            },
            m,
        );
    outer.start().unwrap();
    let (first, before, said, value) = outer.join().unwrap();
    assert!(first.starts_with("Io:"), "{first}");
    assert_eq!(
        before, "InvalidState",
        "a failed start left the process closed"
    );
    assert_eq!(said, "hello from the retried child");
    assert_eq!(value, 42);
}

/// Arguments that cannot be encoded: every start says so (the same kind
/// each time), never "closed".
#[test]
fn unencodable_arguments_fail_every_start_alike() {
    struct Fails;
    impl serde::Serialize for Fails {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom(
                "this value refuses to be encoded",
            ))
        }
    }
    let mut p = Process::builder().task::<u8, _>("no::matter", Fails);
    let first = p.start().unwrap_err();
    let second = p.start().unwrap_err();
    assert_eq!(first.kind(), ErrorKind::Codec, "{first}");
    assert_eq!(second.kind(), ErrorKind::Codec, "{second}");
    assert!(second.to_string().contains("refuses"), "{second}");
}

suite!(a_failed_start_can_be_retried);
