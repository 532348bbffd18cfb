//! Safe wrappers over the process-wide calls the launchers and the
//! bootstrap need: signal dispositions and masks, exit handlers, the
//! environment before `main`, the name `ps` shows, a raw `waitpid`, and a
//! `fork` that is safe because it checks that no other thread exists.
//!
//! `rustix` has no safe `sigaction`, `sigprocmask`, `atexit` or `unsetenv`
//! (they are process-wide state with thread-safety contracts), so those are
//! written here, each with the check that makes it sound.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd};

use std::sync::atomic::{AtomicBool, Ordering};

use super::{ForkResult, Pid};

/// Registers `f` to run at normal process exit (`atexit(3)`).
///
/// `f` is a safe `extern "C"` function, so calling it is always sound; a
/// panic in it aborts the process instead of unwinding into libc.
pub(crate) fn at_exit(f: extern "C" fn()) -> io::Result<()> {
    // SAFETY: `f` is a valid function pointer for the program's whole life
    // (a fn item), takes no arguments, and is safe to call.
    if unsafe { libc::atexit(f) } == 0 {
        Ok(())
    } else {
        Err(io::Error::other("atexit: no room for another handler"))
    }
}

/// Ignores SIGPIPE (as Rust's runtime does before `main`): a write to a
/// closed pipe or socket is then an `EPIPE` error, not death.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN runs no code of ours in signal context.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Blocks (`true`) or unblocks (`false`) SIGINT for the calling thread
/// (`sigprocmask`). A blocked SIGINT stays pending, it is not lost. On
/// x86-64 Linux it makes the `rt_sigprocmask` syscall itself: every
/// forkserver child unblocks SIGINT first thing, and libc's
/// `sigemptyset`/`sigprocmask` code lies in two more 64 KiB windows it
/// would map with a page fault each.
pub(crate) fn block_sigint(block: bool) {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        // The kernel's signal set: bit `n - 1` for signal `n`, 8 bytes.
        let set: u64 = 1 << (libc::SIGINT - 1);
        // SAFETY: rt_sigprocmask(how, &set, NULL, 8) only reads `set`, which
        // lives until the call returns, and writes no memory (no old set is
        // asked for). The `syscall` instruction takes the number in rax and
        // the arguments in rdi, rsi, rdx, r10, returns in rax, and clobbers
        // rcx and r11 (declared); it leaves the stack alone.
        unsafe {
            let _ret: i64;
            std::arch::asm!(
                "syscall",
                inlateout("rax") libc::SYS_rt_sigprocmask => _ret,
                in("rdi") i64::from(how),
                in("rsi") &raw const set,
                in("rdx") 0usize,
                in("r10") std::mem::size_of::<u64>(),
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack, preserves_flags, readonly)
            );
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        // SAFETY: the sigset is initialised by sigemptyset before use, and
        // sigprocmask only reads it (the old mask is not asked for).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigprocmask(how, &set, std::ptr::null_mut());
        }
    }
}

/// Whether the calling thread is the only thread of the process: certain
/// without a syscall while glibc says no second thread ever ran (the
/// forkserver and the tracker, which fork per request), else counted.
fn single_threaded() -> bool {
    super::single_threaded() || matches!(super::thread_count_fast(), Ok(1))
}

/// Reads and removes the environment variable `name`, if this process has
/// one thread (as it does before `main`): the environment is then nobody
/// else's to read at the same time. With more threads it is only read.
pub(crate) fn take_env(name: &CStr) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let key = std::ffi::OsStr::from_bytes(name.to_bytes());
    let value = std::env::var_os(key)?;
    if single_threaded() {
        // SAFETY: no other thread exists (checked just above, and only this
        // thread could start one), so none reads or writes the environment
        // while it changes.
        unsafe { std::env::remove_var(key) };
    }
    Some(value.as_bytes().to_vec())
}

/// Sets the name `ps` shows for the calling thread (`/proc/self/comm`,
/// `PR_SET_NAME`): the first 15 bytes of `name`, up to any NUL.
pub(crate) fn set_name(name: &[u8]) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name[..n]);
    if let Ok(name) = CStr::from_bytes_until_nul(&buf) {
        let _ = rustix::thread::set_name(name);
    }
}

/// Waits for the child `pid` (`waitpid(2)`), returning the raw status word
/// (for passing on unchanged); `Ok(None)` when `nohang` and it still runs.
pub(crate) fn waitpid_raw(pid: Pid, nohang: bool) -> io::Result<Option<i32>> {
    use rustix::process::WaitOptions;
    let target = rustix::process::Pid::from_raw(pid.as_raw());
    let options = if nohang {
        WaitOptions::NOHANG
    } else {
        WaitOptions::empty()
    };
    Ok(rustix::process::waitpid(target, options)?.map(|(_, status)| status.as_raw()))
}

/// [`fork`](super::fork), made safe by checking first that the caller is the
/// process's only thread (then the child may do anything the parent could).
/// Fails (and forks nothing) when another thread exists.
///
/// The child must still end with [`exit_now`](super::exit_now) (or `exec`),
/// not return into code that expects to run once.
pub(crate) fn fork_single_threaded() -> io::Result<ForkResult> {
    if !single_threaded() {
        return Err(io::Error::other(
            "fork refused: this process has more than one thread",
        ));
    }
    // SAFETY: the process has one thread (checked above; only this thread
    // could start another), so the child inherits no lock held elsewhere.
    unsafe { super::fork() }
}

/// Set by `brood::allow_fork_with_threads` (whose caller promises that no
/// other thread holds a lock at a fork): brood then forks this program
/// even while it runs other threads.
static THREADED_FORK_ALLOWED: AtomicBool = AtomicBool::new(false);

/// Records the program's promise (see `brood::allow_fork_with_threads`,
/// the `unsafe fn` that calls this: its caller took on the contract).
pub(crate) fn allow_threaded_fork() {
    THREADED_FORK_ALLOWED.store(true, Ordering::SeqCst);
}

/// Whether the program promised forks with threads are safe.
pub(crate) fn threaded_fork_allowed() -> bool {
    THREADED_FORK_ALLOWED.load(Ordering::SeqCst)
}

/// [`fork`](super::fork) for the fork launcher: made safe by checking
/// first that the caller is the process's only thread, or has no threads
/// but brood's own `extra` helpers (which take no lock the child needs:
/// the launcher holds the one they use, the children table, across the
/// fork), or that the program promised it is safe
/// ([`allow_threaded_fork`]). Fails (and forks nothing) otherwise.
///
/// The child must still end with [`exit_now`](super::exit_now) (or `exec`),
/// not return into code that expects to run once.
///
/// Inlined into the fork launcher: a forked child maps each 64 KiB of code
/// it runs with a page fault, and this function's code lay in another
/// window than the launcher's (one fault per child fewer).
#[inline(always)]
pub(crate) fn fork_checked(extra: usize) -> io::Result<ForkResult> {
    let alone = super::single_threaded()
        || threaded_fork_allowed()
        || super::thread_count_fast().is_ok_and(|n| n <= 1 + extra);
    if !alone {
        return Err(io::Error::other(
            "fork refused: this process runs other threads (see allow_fork_with_threads)",
        ));
    }
    // SAFETY: as checked above, no thread but this one and brood's own
    // helpers runs (so the child inherits no lock held elsewhere), or the
    // program's author accepted the hazard through the `unsafe fn`
    // `allow_fork_with_threads`.
    unsafe { super::fork() }
}

/// Makes the caller a detached helper: it ignores SIGINT, SIGTERM and
/// SIGHUP (a Ctrl-C or a closed terminal does not end it), its standard
/// streams become `/dev/null` (a reader waiting for their end of file does
/// not wait for it), its working directory `/`, and it forks once: the
/// original process exits at once and the copy, in a new session, returns
/// (adopted by init or the nearest subreaper). When the process has other
/// threads or the fork fails, it returns undetached, as the same process.
pub(crate) fn detach() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installing SIG_IGN runs no code of ours in signal context.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = rustix::stdio::dup2_stdin(&null);
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
        if null.as_raw_fd() <= 2 {
            // It landed on a closed standard stream: it is that stream now.
            let _ = null.into_raw_fd();
        }
    }
    let _ = std::env::set_current_dir("/");
    match fork_single_threaded() {
        Ok(ForkResult::Child) => {
            let _ = rustix::process::setsid();
        }
        Ok(ForkResult::Parent { .. }) => super::exit_now(0),
        // Cannot detach: serve as the caller's child instead.
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_is_refused_while_another_thread_runs() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        let err = fork_single_threaded().unwrap_err();
        assert!(err.to_string().contains("more than one thread"), "{err}");
        drop(tx);
        other.join().unwrap();
    }

    #[test]
    fn take_env_only_reads_while_other_threads_run() {
        // The test harness runs this on a thread of its own, so the
        // variable is read and left in place.
        let name = c"BROOD_TAKE_ENV_TEST";
        assert_eq!(take_env(name), None);
        // SAFETY: test-only; no other test reads or writes this variable.
        unsafe { std::env::set_var("BROOD_TAKE_ENV_TEST", "x") };
        assert_eq!(take_env(name), Some(b"x".to_vec()));
        assert_eq!(std::env::var("BROOD_TAKE_ENV_TEST").as_deref(), Ok("x"));
    }

    #[test]
    fn waitpid_raw_passes_the_status_word_on() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32).unwrap();
        let raw = waitpid_raw(pid, false).unwrap().unwrap();
        assert_eq!(super::super::ExitStatus::from_raw(raw).code(), Some(3));
        // Reaped by us: std's handle finds nothing left to wait for.
        assert!(child.try_wait().is_err());
    }
}
