//! The child's entry, before `main`.
//!
//! Spawned children and the forkserver are this same executable, started
//! again with `__BROOD_BOOTSTRAP` in their environment. A static constructor
//! (an `.init_array` entry, which the dynamic loader runs before `main`)
//! reads it, removes it from the environment, and runs the child's job
//! instead of the program: nothing of `main` ever runs in the child, users
//! call no init function, and it works the same in binaries, examples and
//! test harnesses (libtest's `main` never starts either).

use crate::os;
use crate::reexec::{CHILD_FD, ENV, program_name, set_name};

// The one `unsafe` here is the attribute that places the constructor: a
// static in `.init_array` is run by the loader with no caller of ours, so
// the compiler cannot check it (`unsafe(link_section)`). The function it
// points to is safe Rust with the C signature glibc calls it with.
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

/// glibc calls `.init_array` entries with `(argc, argv, envp)`; the
/// arguments are not read (the name comes from `/proc/self/cmdline`, the
/// mode from the environment), so no raw pointer is dereferenced.
extern "C" fn bootstrap(
    _argc: libc::c_int,
    _argv: *const *const libc::c_char,
    _envp: *const *const libc::c_char,
) {
    // Read and removed at once, single-threaded before main: grandchildren
    // the job starts with std::process::Command must not see it.
    let Some(mode) = os::sys::take_env(ENV) else {
        return;
    };
    // Rust's runtime ignores SIGPIPE before main; do the same, since main
    // never runs here: a write to a closed pipe is then an error, not death.
    os::sys::ignore_sigpipe();
    match mode.as_slice() {
        b"spawn" => {
            // argv[0] as the parent passed it: the program's name.
            set_name(&program_name());
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
