//! The child's entry, before `main`.
//!
//! Spawned children and the forkserver are this same executable, started
//! again with `__BROOD_BOOTSTRAP` in their environment. A static constructor
//! (an `.init_array` entry, which the dynamic loader runs before `main`)
//! reads it, removes it from the environment, and runs the child's job
//! instead of the program: nothing of `main` ever runs in the child, users
//! call no init function, and it works the same in binaries, examples and
//! test harnesses (libtest's `main` never starts either).

use std::ffi::CStr;

use crate::os;

/// The environment variable that tells a process it is a brood child.
pub(crate) const ENV: &CStr = c"__BROOD_BOOTSTRAP";

/// The fd a spawned child or the forkserver finds its socket on.
pub(crate) const CHILD_FD: i32 = 3;

#[used]
#[unsafe(link_section = ".init_array")]
static BOOTSTRAP: extern "C" fn(
    libc::c_int,
    *const *const libc::c_char,
    *const *const libc::c_char,
) = bootstrap;

/// Keeps the constructor's object file in the link: `Process::start` calls
/// this, so any program that can start a child also has the constructor.
#[inline(never)]
pub(crate) fn ensure_linked() {
    std::hint::black_box(&BOOTSTRAP);
}

/// glibc calls `.init_array` entries with `(argc, argv, envp)`.
extern "C" fn bootstrap(
    argc: libc::c_int,
    argv: *const *const libc::c_char,
    _envp: *const *const libc::c_char,
) {
    // SAFETY: getenv before main is single-threaded; the pointer is read at
    // once, before anything can change the environment.
    let raw = unsafe { libc::getenv(ENV.as_ptr()) };
    if raw.is_null() {
        return;
    }
    // SAFETY: getenv returned a NUL-terminated string in the environment.
    let mode = unsafe { CStr::from_ptr(raw) }.to_bytes().to_vec();
    // Grandchildren the job starts with std::process::Command must not see it.
    // SAFETY: single-threaded before main; ENV is NUL-terminated.
    unsafe { libc::unsetenv(ENV.as_ptr()) };
    // Rust's runtime ignores SIGPIPE before main; do the same, since main
    // never runs here: a write to a closed pipe is then an error, not death.
    // SAFETY: setting SIG_IGN runs no code of ours in signal context.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    match mode.as_slice() {
        b"spawn" => {
            // SAFETY: glibc hands a constructor the process's own argv, with
            // `argc` valid, NUL-terminated entries.
            let argv0 = (argc > 0 && !argv.is_null())
                .then(|| unsafe { *argv })
                .filter(|p| !p.is_null())
                // SAFETY: as above.
                .map(|p| unsafe { CStr::from_ptr(p) }.to_bytes().to_vec())
                .unwrap_or_default();
            set_name(&base_name(&argv0));
            crate::launch::spawn::child(CHILD_FD)
        }
        b"forkserver" => {
            set_name(b"brood-forksrv");
            crate::launch::forkserver::serve(CHILD_FD)
        }
        b"tracker" => crate::shm::serve_tracker(CHILD_FD),
        // The re-exec floor the benchmarks measure: start, then leave.
        b"noop" => os::exit_now(0),
        other => {
            eprintln!(
                "brood: unknown bootstrap mode {:?}",
                String::from_utf8_lossy(other)
            );
            os::exit_now(70)
        }
    }
}

/// The program's name as the parent was started (`argv[0]`'s last part):
/// executing `/proc/self/exe` would otherwise name the child `exe` in `ps`.
pub(crate) fn program_name() -> Vec<u8> {
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    base_name(cmdline.split(|b| *b == 0).next().unwrap_or_default())
}

/// The last part of a path, or `brood-child` for an empty one.
fn base_name(path: &[u8]) -> Vec<u8> {
    let base = path.rsplit(|b| *b == b'/').next().unwrap_or_default();
    if base.is_empty() {
        b"brood-child".to_vec()
    } else {
        base.to_vec()
    }
}

/// Sets the name `ps` shows (`/proc/self/comm`, at most 15 bytes).
pub(crate) fn set_name(name: &[u8]) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
}
