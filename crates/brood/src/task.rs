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

/// Decodes arguments, calls, and appends the encoded value to the buffer:
/// the pool's shape of a function, which writes each item's value straight
/// into the worker's result frame (no vector per value). On an error the
/// buffer may hold part of a value; the caller cuts it back.
pub(crate) type IntoCall = fn(&[u8], &mut Vec<u8>) -> std::result::Result<(), Fail>;

/// What a pool task's code offset names: a function of the offset's usual
/// shape (`fn(&[u8]) -> _`, so that [`resolve_into`] crosses it exactly as
/// [`resolve`] crosses a [`Trampoline`]) that ignores its argument and
/// returns the task's [`IntoCall`].
pub(crate) type IntoEntry = fn(&[u8]) -> IntoCall;

/// The anchor that trampoline offsets are measured from.
#[inline(never)]
fn anchor() {}

pub(crate) fn to_offset(t: Trampoline) -> i64 {
    crate::os::code::offset_of(t, anchor)
}

/// The offset of an [`IntoEntry`] (see [`to_offset`]).
pub(crate) fn into_offset(entry: IntoEntry) -> i64 {
    crate::os::code::offset_of(entry, anchor)
}

/// The [`IntoCall`] whose entry lies at `offset`, under the same
/// condition as [`resolve`].
pub(crate) fn resolve_into(offset: i64, exe: (u64, u64)) -> Option<IntoCall> {
    crate::os::code::fn_at::<IntoCall>(anchor, offset, exe).map(|entry| entry(&[]))
}

/// Device and inode of `/proc/self/exe` ((0, 0) if unreadable): what a code
/// offset is valid for.
pub(crate) fn exe_identity() -> (u64, u64) {
    crate::os::code::exe_identity()
}

/// The trampoline at `offset`, if `exe` (the sender's [`exe_identity`]) is
/// this very executable file; `None` otherwise (an offset from another
/// program names no code here). The transmute behind it lives in
/// `os::code`.
pub(crate) fn resolve(offset: i64, exe: (u64, u64)) -> Option<Trampoline> {
    crate::os::code::fn_at(anchor, offset, exe)
}

/// What `()` (and any other value of a zero-sized type that encodes as
/// MessagePack's nil) encodes to. A child whose function returned such a
/// value writes no frame at all under fork (see `launch::child_main`): exit code
/// 0 says everything, and the parent decodes the value from these bytes.
pub(crate) const UNIT_ENCODING: &[u8] = &[0xc0];

/// Encodes a child's return value. A zero-sized value that encodes as nil
/// (`()`, unit structs) gives an empty vector, allocating nothing: the
/// child then sends [`UNIT_ENCODING`], or under fork no frame. Inlined
/// into its caller (a forked child maps each 64 KiB of code it runs with a
/// page fault; for a zero-sized value this is a few instructions).
#[inline]
pub(crate) fn encode_value<R: Serialize>(value: &R) -> Result<Vec<u8>, Fail> {
    if std::mem::size_of::<R>() == 0 {
        let mut buf = [0u8; 8];
        let mut rest = &mut buf[..];
        if rmp_serde::encode::write_named(&mut rest, value).is_ok()
            && rest.len() == buf.len() - UNIT_ENCODING.len()
            && buf.starts_with(UNIT_ENCODING)
        {
            return Ok(Vec::new());
        }
    }
    crate::codec::encode(value).map_err(|e| Fail::Encode(e.to_string()))
}

/// How many bytes of an encoded value [`Encoded`] keeps in place; with the
/// frame's header, the parent reads such a frame without allocating
/// (`Process`'s small-frame room is `HEADER_LEN + INLINE`, 64 bytes).
pub(crate) const INLINE: usize = 55;

/// A child's encoded value: a small one (a number, a short string, a small
/// struct: most results) in place, a larger one on the heap. A forked
/// child that encoded its value into a `Vec` made its first allocation
/// there, and malloc's code, its arena and the chunk's page were a page
/// fault each (a child returning a `u64` took 17 faults, one returning
/// `()` 11).
pub(crate) enum Encoded {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Vec<u8>),
}

impl Encoded {
    #[inline]
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Encoded::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Encoded::Heap(v) => v,
        }
    }
}

impl From<Vec<u8>> for Encoded {
    #[inline]
    fn from(v: Vec<u8>) -> Encoded {
        Encoded::Heap(v)
    }
}

/// Encodes a forked closure's value: in place when it fits in [`INLINE`]
/// bytes (no allocation), else on the heap; a zero-sized value as
/// `encode_value` does (no bytes for nil). Same bytes as `encode_value`.
#[inline]
pub(crate) fn encode_small<R: Serialize>(value: &R) -> std::result::Result<Encoded, Fail> {
    if std::mem::size_of::<R>() == 0 {
        return encode_value(value).map(Encoded::Heap);
    }
    let mut out = InlineWriter {
        bytes: [0u8; INLINE],
        len: 0,
    };
    // Too long for the buffer is an error here: the heap takes it then
    // (and reports a value that cannot be encoded at all).
    if rmp_serde::encode::write_named(&mut out, value).is_ok() {
        return Ok(Encoded::Inline {
            len: out.len as u8,
            bytes: out.bytes,
        });
    }
    encode_value(value).map(Encoded::Heap)
}

/// [`encode_small`]'s writer: [`INLINE`] bytes, and an error past them.
struct InlineWriter {
    bytes: [u8; INLINE],
    len: usize,
}

impl std::io::Write for InlineWriter {
    #[inline]
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.write_all(data).map(|()| data.len())
    }

    #[inline]
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        let end = self.len + data.len();
        if end > INLINE {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let to = &mut self.bytes[self.len..end];
        // The codec's markers and numbers (1 to 9 bytes) as
        // copies of a known length, which compile to moves: a copy of an
        // unknown length is a call to libc's memcpy, whose code a forked
        // child would fault in for it.
        fn put<const N: usize>(to: &mut [u8], data: &[u8]) {
            if let (Ok(to), Ok(data)) = (<&mut [u8; N]>::try_from(to), <&[u8; N]>::try_from(data)) {
                *to = *data;
            }
        }
        match data.len() {
            1 => put::<1>(to, data),
            2 => put::<2>(to, data),
            3 => put::<3>(to, data),
            4 => put::<4>(to, data),
            5 => put::<5>(to, data),
            8 => put::<8>(to, data),
            9 => put::<9>(to, data),
            _ => to.copy_from_slice(data),
        }
        self.len = end;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

/// Makes an `F` out of nothing: `F` must be a function item or a closure
/// that captures nothing (zero-sized, checked at compile time); see
/// `os::code::conjure`.
pub(crate) fn summon<F>() -> F {
    const { assert_captures_nothing::<F>() };
    crate::os::code::conjure::<F>()
}

/// Calls the capture-free function type `F` on `arg`, making the `F` out of
/// nothing: [`summon`] for code that names a function by
/// its type only (the event engine's handler trampolines, which run in a
/// worker process that never saw the handler value). A capturing closure
/// is a compile error, as everywhere a function crosses to another process.
///
/// Only instantiate it for an `F` of which the program had a value (the
/// event engine's `register` takes the handler by value): `F` is then a
/// function item or a closure type, not a zero-sized token of some other
/// API.
pub(crate) fn call_capture_free<F, A, R>(arg: A) -> R
where
    F: Fn(A) -> R,
{
    // `summon` checks at compile time that `F` is zero-sized; an `F: Fn`
    // that is zero-sized is a function item or a closure that captures
    // nothing (per this function's contract, one whose value the program
    // had), which has no bytes and no validity invariant.
    let f = summon::<F>();
    f(arg)
}

pub(crate) fn trampoline0<F, R>(args: &[u8]) -> std::result::Result<Vec<u8>, Fail>
where
    F: FnOnce() -> R,
    R: Serialize,
{
    let () = codec::decode(args).map_err(|e| Fail::BadArgs(e.to_string()))?;
    // Only instantiated by `Process::new` and friends for an `F` that
    // passed `assert_captures_nothing` and is a function or closure type.
    let f = summon::<F>();
    encode_value(&f())
}

pub(crate) fn trampoline1<F, A, R>(args: &[u8]) -> std::result::Result<Vec<u8>, Fail>
where
    F: FnOnce(A) -> R,
    A: DeserializeOwned,
    R: Serialize,
{
    let args: A = codec::decode(args).map_err(|e| Fail::BadArgs(e.to_string()))?;
    // As in `trampoline0`.
    let f = summon::<F>();
    encode_value(&f(args))
}

/// Appends `value`'s encoding to `out` (the [`IntoCall`]s' encoder).
#[inline]
fn encode_into<R: Serialize>(out: &mut Vec<u8>, value: &R) -> std::result::Result<(), Fail> {
    rmp_serde::encode::write_named(out, value).map_err(|e| Fail::Encode(e.to_string()))
}

/// Decodes a task's arguments (the [`IntoCall`]s' decoder).
#[inline]
fn decode_args<A: DeserializeOwned>(args: &[u8]) -> std::result::Result<A, Fail> {
    codec::decode(args).map_err(|e| Fail::BadArgs(e.to_string()))
}

/// [`trampoline1`] as an [`IntoCall`]: the value goes straight into `out`.
pub(crate) fn into_call1<F, A, R>(args: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), Fail>
where
    F: FnOnce(A) -> R,
    A: DeserializeOwned,
    R: Serialize,
{
    let args: A = decode_args(args)?;
    // Only instantiated by the pool (`func1`) for an `F` that passed
    // `assert_captures_nothing` and is a function or closure type.
    let f = summon::<F>();
    encode_into(out, &f(args))
}

/// The [`IntoEntry`] of [`into_call1`].
pub(crate) fn into_entry1<F, A, R>(_: &[u8]) -> IntoCall
where
    F: FnOnce(A) -> R,
    A: DeserializeOwned,
    R: Serialize,
{
    into_call1::<F, A, R>
}

/// A function of several arguments that [`Pool::starmap`](crate::Pool::starmap) calls with the
/// items of a tuple, as Python's `starmap` unpacks each argument tuple.
/// Implemented for every `FnOnce(A, B, ...) -> R` of up to six arguments.
///
/// ```
/// let pool = brood::Pool::new(2)?;
/// let sums = pool.starmap(|a: u32, b: u32| a + b, vec![(1, 2), (3, 4)])?;
/// assert_eq!(sums, [3, 7]);
/// # Ok::<(), brood::Error>(())
/// ```
pub trait StarFn<Args, R>: Send + 'static {
    /// Calls the function with the tuple's items as its arguments.
    fn call_star(self, args: Args) -> R;
}

macro_rules! star_fn {
    ($($a:ident),+) => {
        impl<F, R, $($a),+> StarFn<($($a,)+), R> for F
        where
            F: FnOnce($($a),+) -> R + Send + 'static,
        {
            #[allow(non_snake_case)]
            fn call_star(self, ($($a,)+): ($($a,)+)) -> R {
                self($($a),+)
            }
        }
    };
}
star_fn!(A);
star_fn!(A, B);
star_fn!(A, B, C);
star_fn!(A, B, C, D);
star_fn!(A, B, C, D, E);
star_fn!(A, B, C, D, E, G);

/// Like [`into_call1`], for a function of several arguments called with a
/// decoded tuple (the pool's `starmap`).
pub(crate) fn into_call_star<F, A, R>(
    args: &[u8],
    out: &mut Vec<u8>,
) -> std::result::Result<(), Fail>
where
    F: StarFn<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    let args: A = decode_args(args)?;
    // Only instantiated by the pool's `starmap` for an `F` that passed
    // `assert_captures_nothing` and is a function or closure type.
    let f = summon::<F>();
    encode_into(out, &f.call_star(args))
}

/// The [`IntoEntry`] of [`into_call_star`].
pub(crate) fn into_entry_star<F, A, R>(_: &[u8]) -> IntoCall
where
    F: StarFn<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    into_call_star::<F, A, R>
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
    encode_value(&f(args))
}

/// Calls the registered task `name` in this process with its arguments
/// already encoded by the codec (the task's parameters as a tuple), and
/// returns its value encoded by the codec. For backends that carry tasks
/// as bytes (brood-redis runs this inside a pool worker). A panic in the
/// task unwinds out of this call, as the task's own panic would.
///
/// ```
/// #[brood::task]
/// fn add2(a: u32, b: u32) -> u32 { a + b }
///
/// let args = brood::codec::encode(&(2u32, 3u32))?;
/// let value = brood::task::call(concat!(module_path!(), "::add2"), &args)?;
/// assert_eq!(brood::codec::decode::<u32>(&value)?, 5);
/// assert!(brood::task::call("no::such::task", &args).is_err());
/// # Ok::<(), brood::Error>(())
/// ```
pub fn call(name: &str, args: &[u8]) -> Result<Vec<u8>> {
    match lookup(name)?(args) {
        Ok(v) if v.is_empty() => Ok(UNIT_ENCODING.to_vec()),
        Ok(v) => Ok(v),
        Err(Fail::BadArgs(e)) => Err(Error::simple(
            ErrorKind::Codec,
            format!("task {name:?}: arguments do not decode: {e}"),
        )),
        Err(Fail::Encode(e)) => Err(Error::simple(
            ErrorKind::Codec,
            format!("task {name:?}: value does not encode: {e}"),
        )),
        Err(Fail::UnknownTask(n)) => Err(Error::simple(
            ErrorKind::UnknownTask,
            format!("no task named {n:?} is registered in this program"),
        )),
    }
}
