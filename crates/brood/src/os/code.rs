//! Code across processes: a function pointer turned into an offset in this
//! executable and back, and zero-sized function values made out of nothing.
//! Both need `unsafe` (Rust has no safe form of either); this module keeps
//! it behind two checked, crate-private wrappers that `task.rs` builds on.

use std::sync::OnceLock;

/// Device and inode of `/proc/self/exe` ((0, 0) if unreadable): what a code
/// offset is valid for.
pub(crate) fn exe_identity() -> (u64, u64) {
    use std::os::linux::fs::MetadataExt;
    static EXE: OnceLock<(u64, u64)> = OnceLock::new();
    *EXE.get_or_init(|| {
        std::fs::metadata("/proc/self/exe").map_or((0, 0), |m| (m.st_dev(), m.st_ino()))
    })
}

/// The distance from `anchor` to `f`, both functions of this executable.
pub(crate) fn offset_of<R>(f: fn(&[u8]) -> R, anchor: fn()) -> i64 {
    (f as usize as i64).wrapping_sub(anchor as usize as i64)
}

/// The function at `offset` from `anchor`, if `exe` (the device and inode
/// of the executable the offset was measured in, [`exe_identity`] there) is
/// this very executable file; `None` otherwise (an offset from another
/// program names no code here).
///
/// Crate-private: its callers pass only offsets that [`offset_of`] made,
/// for a function of this exact type, in a brood process of the tree (the
/// job a parent sends its child, the pool's and event engine's task
/// frames), never bytes from an untrusted peer.
pub(crate) fn fn_at<R>(anchor: fn(), offset: i64, exe: (u64, u64)) -> Option<fn(&[u8]) -> R> {
    if exe != exe_identity() || exe == (0, 0) {
        return None;
    }
    let addr = (anchor as usize as i64).wrapping_add(offset) as usize;
    // SAFETY: the offset came from `offset_of` for a `fn(&[u8]) -> R` in a
    // process running this same executable file (device and inode checked
    // just above), so the same code lies at the same offset from `anchor`
    // here: `addr` is a valid function pointer of that type.
    Some(unsafe { std::mem::transmute::<usize, fn(&[u8]) -> R>(addr) })
}

/// A value of the zero-sized type `F`, made out of nothing: how a function
/// that captures nothing reaches another process (its trampoline makes it
/// there). `F` is checked at compile time to be zero-sized.
///
/// Crate-private: every caller instantiates it only with a function item
/// or capture-free closure type (`Process::new`, `Builder::target*`, the
/// pool's and the event engine's registrations, each of which was handed a
/// value of that type and checked `task::assert_captures_nothing`). Such a
/// type has no bytes and no invariant: every value of it is the same.
pub(crate) fn conjure<F>() -> F {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "brood: only a zero-sized function value can be made out of nothing"
        )
    };
    // SAFETY: F is zero-sized (checked above) and, as every caller
    // guarantees, a function or capture-free closure type: it has no
    // validity invariant, so the zero-sized "all-zero" value is a value.
    unsafe { std::mem::zeroed::<F>() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor() {}

    fn twice(args: &[u8]) -> usize {
        args.len() * 2
    }

    #[test]
    fn an_offset_names_the_same_function_in_the_same_executable() {
        let offset = offset_of(twice as fn(&[u8]) -> usize, anchor);
        let f = fn_at::<usize>(anchor, offset, exe_identity()).unwrap();
        assert_eq!(f(b"abc"), 6);
        assert!(fn_at::<usize>(anchor, offset, (1, 2)).is_none());
    }

    #[test]
    fn a_capture_free_closure_is_made_out_of_nothing() {
        let add = |a: u32| a + 1;
        fn make<F: Fn(u32) -> u32>(_: &F) -> F {
            conjure::<F>()
        }
        assert_eq!(make(&add)(41), 42);
    }
}
