//! How a function reaches another process.
//!
//! - **Functions that capture nothing** (plain `fn` items and closures without
//!   captures) are zero-sized types. brood monomorphizes a trampoline for each
//!   (decode the arguments, call, encode the value) and sends the
//!   trampoline's address as an offset from a fixed function of this crate.
//!   The child is always the same executable (`/proc/self/exe`, checked by
//!   device and inode before the call), so the offset names the same code.
//! - **Registered tasks** (`#[brood::task]`) are looked up by a stable name,
//!   `module::path::function`, so another build of the program — on another
//!   machine, later — can call them. Unknown names and arguments of the wrong
//!   type are errors ([`ErrorKind::UnknownTask`], [`ErrorKind::Codec`]),
//!   never undefined behaviour.
//!
//! A closure that captures variables cannot cross: it is a compile error
//! wherever a function for another process is expected.
//!
//! ```compile_fail
//! let greeting = String::from("hello");
//! // error: this closure captures variables, so it cannot cross to a
//! // spawned or forkserver child
//! let p = brood::Process::new(move || greeting.len());
//! ```
//!
//! ```
//! #[brood::task]
//! fn add(a: u32, b: u32) -> u32 {
//!     a + b
//! }
//!
//! let name = concat!(module_path!(), "::add");
//! assert!(brood::task::registered().any(|t| t == name));
//! let mut p = brood::Process::<u32>::task(name, (2u32, 3u32));
//! p.start().unwrap();
//! assert_eq!(p.join().unwrap(), 5);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{Error, ErrorKind, Result};

/// Why a trampoline produced no value (used by `#[brood::task]`'s generated
/// code; not part of the stable surface).
#[doc(hidden)]
#[derive(Debug)]
pub enum Fail {
    /// The arguments did not decode as the function's parameter types.
    BadArgs(String),
    /// The return value did not encode.
    Encode(String),
    /// No task of that name is registered.
    UnknownTask(String),
}

/// Decodes arguments, calls, encodes the value: the one shape every function
/// takes to cross a process boundary.
pub(crate) type Trampoline = fn(&[u8]) -> std::result::Result<Vec<u8>, Fail>;

/// The anchor that trampoline offsets are measured from.
#[inline(never)]
fn anchor() {}

pub(crate) fn to_offset(t: Trampoline) -> i64 {
    (t as usize as i64).wrapping_sub(anchor as fn() as usize as i64)
}

/// Turns an offset back into a trampoline.
///
/// # Safety
///
/// `offset` must come from [`to_offset`] in a process running the same
/// executable (same file, so the same code at the same offsets).
pub(crate) unsafe fn from_offset(offset: i64) -> Trampoline {
    let addr = (anchor as fn() as usize as i64).wrapping_add(offset) as usize;
    // SAFETY: per the contract, `addr` is the address of a `Trampoline` in
    // this very executable, so it is a valid fn pointer of that type.
    unsafe { std::mem::transmute::<usize, Trampoline>(addr) }
}

/// Proves at compile time that `F` captures nothing.
pub(crate) const fn assert_captures_nothing<F>() {
    assert!(
        std::mem::size_of::<F>() == 0,
        "brood: this closure captures variables, so it cannot cross to a spawned or forkserver \
         child. Pass the data as arguments (Process::with_args), register a #[brood::task], or \
         run a capturing closure in a forked child with Process::fork."
    );
}

/// Makes an `F` out of nothing.
///
/// # Safety
///
/// `F` must be zero-sized and a function item or a closure that captures
/// nothing (what [`assert_captures_nothing`] checks for the size): such a
/// value has no bytes and no invariant, so every "instance" is the same.
pub(crate) unsafe fn conjure<F>() -> F {
    const { assert_captures_nothing::<F>() };
    // SAFETY: F is zero-sized (checked above) and, per the contract, a
    // function or capture-free closure type, which has no validity invariant.
    unsafe { std::mem::zeroed::<F>() }
}

pub(crate) fn trampoline0<F, R>(args: &[u8]) -> std::result::Result<Vec<u8>, Fail>
where
    F: FnOnce() -> R,
    R: Serialize,
{
    let () = codec::decode(args).map_err(|e| Fail::BadArgs(e.to_string()))?;
    // SAFETY: only instantiated by `Process::new` and friends for an `F` that
    // passed `assert_captures_nothing` and is a function or closure type.
    let f = unsafe { conjure::<F>() };
    crate::launch::encode_value(&f())
}

pub(crate) fn trampoline1<F, A, R>(args: &[u8]) -> std::result::Result<Vec<u8>, Fail>
where
    F: FnOnce(A) -> R,
    A: DeserializeOwned,
    R: Serialize,
{
    let args: A = codec::decode(args).map_err(|e| Fail::BadArgs(e.to_string()))?;
    // SAFETY: as in `trampoline0`.
    let f = unsafe { conjure::<F>() };
    crate::launch::encode_value(&f(args))
}

/// Like [`trampoline1`], for a function of several arguments called with a
/// decoded tuple (the pool's `starmap`).
pub(crate) fn trampoline_star<F, A, R>(args: &[u8]) -> std::result::Result<Vec<u8>, Fail>
where
    F: crate::pool::StarFn<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    let args: A = codec::decode(args).map_err(|e| Fail::BadArgs(e.to_string()))?;
    // SAFETY: only instantiated by the pool's `starmap` for an `F` that
    // passed `assert_captures_nothing` and is a function or closure type.
    let f = unsafe { conjure::<F>() };
    codec::encode(&f.call_star(args)).map_err(|e| Fail::Encode(e.to_string()))
}

/// One function registered with `#[brood::task]`. Built by the macro; you do
/// not make these by hand.
///
/// ```
/// #[brood::task]
/// fn ping() -> String { "pong".into() }
/// assert!(brood::task::registered().any(|n| n.ends_with("::ping")));
/// ```
#[derive(Debug)]
pub struct TaskEntry {
    name: &'static str,
    call: Trampoline,
}

impl TaskEntry {
    #[doc(hidden)]
    pub const fn new(
        name: &'static str,
        call: fn(&[u8]) -> std::result::Result<Vec<u8>, TaskFail>,
    ) -> TaskEntry {
        TaskEntry { name, call }
    }
}

/// Why a registered task produced no value (used by `#[brood::task]`'s
/// generated code; opaque).
#[doc(hidden)]
pub type TaskFail = Fail;

inventory::collect!(TaskEntry);

/// The names of every task registered in this program.
///
/// ```
/// let names: Vec<&str> = brood::task::registered().collect();
/// # let _ = names;
/// ```
pub fn registered() -> impl Iterator<Item = &'static str> {
    inventory::iter::<TaskEntry>.into_iter().map(|t| t.name)
}

/// Looks a registered task up by name.
pub(crate) fn lookup(name: &str) -> Result<Trampoline> {
    inventory::iter::<TaskEntry>
        .into_iter()
        .find(|t| t.name == name)
        .map(|t| t.call)
        .ok_or_else(|| {
            Error::simple(
                ErrorKind::UnknownTask,
                format!(
                    "no task named {name:?} is registered in this program (use #[brood::task])"
                ),
            )
        })
}

#[doc(hidden)]
/// Called by `#[brood::task]`'s generated trampoline.
pub fn __call<A, R>(args: &[u8], f: impl FnOnce(A) -> R) -> std::result::Result<Vec<u8>, TaskFail>
where
    A: DeserializeOwned,
    R: Serialize,
{
    let args: A = codec::decode(args).map_err(|e| Fail::BadArgs(e.to_string()))?;
    crate::launch::encode_value(&f(args))
}
