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

/// Where the child's atexit handler leaves its mark.
static MARK: std::sync::Mutex<Option<std::path::PathBuf>> = std::sync::Mutex::new(None);

extern "C" fn leave_mark() {
    if let Some(path) = MARK.lock().unwrap().as_ref() {
        std::fs::write(path, b"atexit ran").unwrap();
    }
}

/// How a child ends: stdout's buffer is flushed under every start method;
/// atexit handlers registered in the child run in a spawned child (Python's
/// spawn children end with `sys.exit`) and not in a forked or forkserver
/// one (Python's end with `os._exit`).
fn a_child_flushes_stdout_and_runs_atexit_only_when_spawned(m: StartMethod) {
    common::allow_fork();
    let dir = std::env::temp_dir();
    let tag = format!("{}-{m}", std::process::id());
    let out = dir.join(format!("brood-exit-stdout-{tag}"));
    let mark = dir.join(format!("brood-exit-mark-{tag}"));
    let _ = std::fs::remove_file(&mark);
    let mut p = Process::builder().start_method(m).target_with(
        |(out, mark): (std::path::PathBuf, std::path::PathBuf)| {
            use std::os::fd::AsRawFd;
            let file = std::fs::File::create(&out).unwrap();
            // SAFETY: dup2 onto stdout; `file` stays open for the call.
            assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), 1) }, 1);
            *MARK.lock().unwrap() = Some(mark);
            // SAFETY: registers a plain extern "C" fn.
            assert_eq!(unsafe { libc::atexit(leave_mark) }, 0);
            // No newline, no flush: only the child's exit can write it.
            // Through `Stdout` itself (`print!` would go to libtest's
            // capture, inherited by a forked child).
            use std::io::Write;
            std::io::stdout()
                .write_all(b"left in stdout's buffer")
                .unwrap();
        },
        (out.clone(), mark.clone()),
    );
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "left in stdout's buffer",
        "stdout was not flushed at the child's exit"
    );
    let ran = mark.exists();
    assert_eq!(
        ran,
        m == StartMethod::Spawn,
        "atexit handler ran: {ran}, under {m}"
    );
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&mark);
}

suite!(
    a_failed_start_can_be_retried,
    a_child_flushes_stdout_and_runs_atexit_only_when_spawned,
);
