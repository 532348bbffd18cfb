//! Shared memory: `SharedMemory`, `Value`, `Array` (work in progress).

/// The resource tracker's loop (bootstrap mode `tracker`), run before `main`
/// in a process started with `launch::spawn::spawn_self("tracker", ...)`.
/// Placeholder until the tracker lands: leaves at once.
pub(crate) fn serve_tracker(_fd: i32) -> ! {
    crate::os::exit_now(0)
}
