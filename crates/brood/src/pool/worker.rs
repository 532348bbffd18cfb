//! The worker process's loop, and the wire format between it and the
//! supervisor (see `README.md`: one frame per batch in, one per unit out).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::connection::Connection;
use crate::launch::{self, WireTarget};
use crate::shm::RawValue;
use crate::shm::spsc::Spsc;
use crate::task::{Fail, IntoCall, Trampoline};

/// `func` tag: a trampoline offset follows (`i64` LE).
pub(crate) const FUNC_OFFSET: u8 = 0;
/// `func` tag: a registered task's name follows (`u16` LE length, bytes).
pub(crate) const FUNC_NAMED: u8 = 1;
/// Before `func`: the unit has a hard time limit (the worker records when
/// it began it); its soft limit follows (`u64` LE nanoseconds, `u64::MAX`:
/// none), then the real `func`.
pub(crate) const FUNC_LIMITS: u8 = 2;
/// Before `func`: the unit has a soft time limit only; it follows as for
/// [`FUNC_LIMITS`].
pub(crate) const FUNC_SOFT_LIMIT: u8 = 3;
/// Before `func` (after the limits, if any): some of the unit's items hold
/// fds. `[n u32][n × u8]` follows: per item, how many of the batch's fds
/// (`SCM_RIGHTS`, in item order) it takes; then the real `func`.
pub(crate) const UNIT_FDS: u8 = 4;
/// `func` tag: the offset of a [`task::IntoEntry`](crate::task::IntoEntry)
/// follows (`i64` LE): a function that writes each value straight into
/// the result frame (every capture-free function the pool is given).
pub(crate) const FUNC_INTO: u8 = 5;
/// The `seq` of the frame a worker sends when its initializer failed.
pub(crate) const SEQ_INIT_FAILED: u64 = u64::MAX;
/// Bytes of a worker's result ring (`Boot::results`).
pub(crate) const RESULT_RING_BYTES: u64 = 256 << 10;
/// The largest result frame that goes through the ring; a larger one goes
/// on the socket, announced by an empty record. With at most
/// `MAX_WINDOW` (128) units out per worker, the ring never fills:
/// 128 × (1 KiB + 8) plus one record lost to a wrap < 256 KiB.
pub(crate) const MAX_RING_RESULT: usize = 1 << 10;

/// What every worker is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct Boot {
    /// The worker's end of its duplex channel to the supervisor.
    pub(crate) conn: Connection,
    /// Device and inode of the parent's executable: task offsets are
    /// trusted only if the worker runs the same file.
    pub(crate) exe: (u64, u64),
    /// The initializer and its arguments, run once before the first task.
    pub(crate) init: Option<InitBlob>,
    /// Leave SIGINT to the parent (see `PoolBuilder::interrupt_on_sigint`).
    pub(crate) ignore_sigint: bool,
    /// Shared with the supervisor: `seq + 1` of the unit the worker began
    /// last (0: none yet), so that a death is charged to the unit it held
    /// and never to one it had not started.
    pub(crate) started: RawValue<u64>,
    /// Shared with the supervisor: when (`CLOCK_MONOTONIC` ns) the worker
    /// began the unit `started` names, written before `started` (with a
    /// fence) for units that have time limits: the supervisor's hard limit
    /// counts from it.
    pub(crate) began_at: RawValue<u64>,
    /// Shared with the supervisor: the worker's results, one record per
    /// unit (see `send_result`).
    pub(crate) results: Spsc,
}

/// An initializer as it crosses to each worker: its function, its encoded
/// arguments, and the fds those arguments hold (duplicated for each worker).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct InitBlob {
    pub(crate) target: WireTarget,
    #[serde(with = "serde_bytes")]
    pub(crate) args: Vec<u8>,
    pub(crate) fds: Vec<FdArg>,
}

/// An fd the pool keeps and hands (a duplicate of) to every worker.
#[derive(Clone)]
pub(crate) struct FdArg(pub(crate) Arc<OwnedFd>);

impl Serialize for FdArg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::handle::serialize_fd(&*self.0, s)
    }
}

impl<'de> Deserialize<'de> for FdArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FdArg, D::Error> {
        crate::handle::deserialize_fd::<D, OwnedFd>(d).map(|fd| FdArg(Arc::new(fd)))
    }
}

/// Appends a function reference to a unit header.
pub(crate) fn encode_func(target: &WireTarget) -> Vec<u8> {
    match target {
        WireTarget::Offset(offset) => {
            let mut out = vec![FUNC_OFFSET];
            out.extend_from_slice(&offset.to_le_bytes());
            out
        }
        WireTarget::Named(name) => {
            let mut out = vec![FUNC_NAMED];
            let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&name.as_bytes()[..usize::from(len)]);
            out
        }
    }
}

/// A bounds-checked reader over a received frame: malformed input is an
/// error, never a panic.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// A `[len u32][bytes]` field.
    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Appends a `[len u32][bytes]` field.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// What a worker resolved a unit's function to.
enum Resolved {
    Call(Trampoline),
    Into(IntoCall),
    Missing(String),
}

/// The worker's main function: initializer, then the task loop. Returns
/// (and the worker exits 0) on the quit frame or when the supervisor's end
/// closes.
pub(crate) fn worker_main(boot: Boot) {
    let Boot {
        mut conn,
        exe,
        init,
        ignore_sigint,
        started,
        began_at,
        mut results,
    } = boot;
    conn.set_max_message(crate::codec::DEFAULT_MAX_FRAME);
    crate::os::forget_sigint_in_child();
    if ignore_sigint {
        let _ = crate::os::ignore_sigint();
    }
    let mut out = Vec::with_capacity(256);
    if let Some(init) = init
        && let Err((tag, payload)) = run_init(init, exe)
    {
        out.extend_from_slice(&SEQ_INIT_FAILED.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.push(tag);
        put_bytes(&mut out, &payload);
        let _ = conn.send_bytes(&out);
        return;
    }
    let mut named: HashMap<Vec<u8>, Resolved> = HashMap::new();
    loop {
        // The fds of the batch's arguments (none on the fast path); those
        // an item does not take are closed when the batch is done.
        let Ok((batch, fds)) = conn.recv_bytes_with_fds() else {
            return;
        };
        if batch.is_empty() {
            return; // the quit frame
        }
        let mut fds = fds.into_iter();
        let mut r = Reader::new(&batch);
        while !r.is_empty() {
            let ctx = UnitCtx {
                exe,
                started: &started,
                began_at: &began_at,
            };
            let Some(()) = run_unit(&mut r, &mut out, &ctx, &mut named, &mut fds) else {
                return; // a malformed batch: leave, the supervisor sees why
            };
            if !send_result(&mut conn, &mut results, &out) {
                return;
            }
        }
    }
}

/// Hands a unit's result frame to the supervisor before the next unit
/// begins (invariant 2): into the shared ring (no system call; a doorbell,
/// an empty frame on the socket, only if the supervisor sleeps), or, for
/// a frame over [`MAX_RING_RESULT`], an empty record in the ring that
/// announces it, then the frame on the socket. False if the supervisor is
/// gone.
fn send_result(conn: &mut Connection, ring: &mut Spsc, frame: &[u8]) -> bool {
    let small = frame.len() <= MAX_RING_RESULT.min(ring.max_record());
    loop {
        if ring.try_put(if small { frame } else { &[] }) {
            break;
        }
        // Full: never, while the supervisor keeps its window (see
        // `RESULT_RING_BYTES`); wake it if it sleeps and give it time.
        if ring.consumer_asleep() && conn.send_bytes(&[]).is_err() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    if !small {
        // The frame itself wakes a sleeping supervisor.
        return conn.send_bytes(frame).is_ok();
    }
    !ring.consumer_asleep() || conn.send_bytes(&[]).is_ok()
}

/// What every unit of a worker reads besides its batch.
struct UnitCtx<'a> {
    exe: (u64, u64),
    started: &'a RawValue<u64>,
    began_at: &'a RawValue<u64>,
}

/// Reads one unit from `r`, runs its items (each with its own fds, taken
/// in order from `fds`), and leaves its result frame in `out`.
fn run_unit(
    r: &mut Reader<'_>,
    out: &mut Vec<u8>,
    ctx: &UnitCtx<'_>,
    named: &mut HashMap<Vec<u8>, Resolved>,
    fds: &mut std::vec::IntoIter<OwnedFd>,
) -> Option<()> {
    let UnitCtx {
        exe,
        started,
        began_at,
    } = *ctx;
    let seq = r.u64()?;
    let mut tag = r.u8()?;
    if tag == FUNC_LIMITS || tag == FUNC_SOFT_LIMIT {
        let soft = r.u64()?;
        if tag == FUNC_LIMITS {
            began_at.set(super::supervisor::monotonic_ns());
            // `began_at` is visible before `started` names this unit.
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        }
        let deadline = (soft != u64::MAX)
            .then(|| std::time::Instant::now().checked_add(std::time::Duration::from_nanos(soft)))
            .flatten();
        super::limits::set_task_deadline(deadline);
        tag = r.u8()?;
    } else {
        super::limits::set_task_deadline(None);
    }
    let mut counts: Option<&[u8]> = None;
    if tag == UNIT_FDS {
        let k = r.u32()? as usize;
        counts = Some(r.take(k)?);
        tag = r.u8()?;
    }
    started.set(seq.wrapping_add(1));
    let func = match tag {
        FUNC_OFFSET => {
            let offset = r.u64()? as i64;
            match launch::trampoline_at(exe, offset) {
                Some(call) => Resolved::Call(call),
                None => Resolved::Missing(
                    "the pool's parent runs a different executable; use #[brood::task]".into(),
                ),
            }
        }
        FUNC_NAMED => {
            let n = usize::from(r.u16()?);
            let name = r.take(n)?;
            let resolved =
                named.entry(name.to_vec()).or_insert_with(|| {
                    match crate::task::lookup(&String::from_utf8_lossy(name)) {
                        Ok(call) => Resolved::Call(call),
                        Err(e) => Resolved::Missing(e.to_string()),
                    }
                });
            match resolved {
                Resolved::Call(call) => Resolved::Call(*call),
                Resolved::Into(call) => Resolved::Into(*call),
                Resolved::Missing(m) => Resolved::Missing(m.clone()),
            }
        }
        FUNC_INTO => {
            let offset = r.u64()? as i64;
            match crate::task::resolve_into(offset, exe) {
                Some(call) => Resolved::Into(call),
                None => Resolved::Missing(
                    "the pool's parent runs a different executable; use #[brood::task]".into(),
                ),
            }
        }
        _ => return None,
    };
    let n = r.u32()?;
    if counts.is_some_and(|c| c.len() != n as usize) {
        return None;
    }
    out.clear();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    for k in 0..n as usize {
        let args = r.bytes()?;
        let own = counts.map_or(0, |c| usize::from(c[k]));
        if let Resolved::Into(call) = &func {
            let call = *call;
            // The value is encoded straight into `out` (no vector per
            // item).
            if own == 0 {
                run_item_into(call, args, out);
            } else {
                let mine: Vec<OwnedFd> = fds.by_ref().take(own).collect();
                // Whatever the task does not keep is closed here.
                crate::handle::with_incoming(mine, || run_item_into(call, args, out));
            }
            continue;
        }
        let (tag, payload) = match &func {
            Resolved::Call(call) if own == 0 => run_item(*call, args),
            Resolved::Call(call) => {
                let mine: Vec<OwnedFd> = fds.by_ref().take(own).collect();
                // Whatever the task does not keep is closed here.
                crate::handle::with_incoming(mine, || run_item(*call, args))
            }
            Resolved::Into(_) => unreachable!("handled above"),
            Resolved::Missing(m) => {
                fds.by_ref().take(own).for_each(drop);
                (launch::TAG_UNKNOWN_TASK, m.clone().into_bytes())
            }
        };
        out.push(tag);
        put_bytes(out, &payload);
    }
    Some(())
}

/// The tag and encoded report of a call that panicked with `payload`.
fn panicked(payload: Box<dyn std::any::Any + Send>) -> (u8, Vec<u8>) {
    let report = launch::take_panic_report(&*payload);
    // Leak the payload: dropping it could panic again.
    std::mem::forget(payload);
    (
        launch::TAG_PANICKED,
        crate::codec::encode(&report).unwrap_or_default(),
    )
}

/// Runs one item under `catch_unwind`: a panic becomes a report, and the
/// worker goes on.
fn run_item(call: Trampoline, args: &[u8]) -> (u8, Vec<u8>) {
    match panic::catch_unwind(AssertUnwindSafe(|| call(args))) {
        // A zero-sized value (`()`) comes back from the trampoline as no
        // bytes at all; on the wire it is its encoding, nil.
        Ok(Ok(bytes)) if bytes.is_empty() => (launch::TAG_RETURNED, launch::UNIT_ENCODING.to_vec()),
        Ok(Ok(bytes)) => (launch::TAG_RETURNED, bytes),
        Ok(Err(fail)) => fail_tag(fail),
        Err(payload) => panicked(payload),
    }
}

/// Runs one item of an [`IntoCall`] under `catch_unwind` and appends its
/// `[tag u8][len u32][payload]` to `out`, the value encoded in place. A
/// failure (a panic, arguments that do not decode, a value that does not
/// encode) cuts back whatever the call wrote and appends its report
/// instead; the worker goes on.
fn run_item_into(call: IntoCall, args: &[u8], out: &mut Vec<u8>) {
    let at = out.len();
    out.push(launch::TAG_RETURNED);
    out.extend_from_slice(&[0; 4]);
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| call(args, &mut *out)));
    let (tag, payload) = match outcome {
        Ok(Ok(())) => match u32::try_from(out.len() - at - 5) {
            Ok(len) => {
                out[at + 1..at + 5].copy_from_slice(&len.to_le_bytes());
                return;
            }
            Err(_) => (
                launch::TAG_ENCODE_FAILED,
                b"the value encodes to more than 4 GiB".to_vec(),
            ),
        },
        Ok(Err(fail)) => fail_tag(fail),
        Err(payload) => panicked(payload),
    };
    out.truncate(at);
    out.push(tag);
    put_bytes(out, &payload);
}

fn fail_tag(fail: Fail) -> (u8, Vec<u8>) {
    match fail {
        Fail::Encode(m) => (launch::TAG_ENCODE_FAILED, m.into_bytes()),
        Fail::BadArgs(m) => (launch::TAG_BAD_ARGS, m.into_bytes()),
        Fail::UnknownTask(m) => (launch::TAG_UNKNOWN_TASK, m.into_bytes()),
    }
}

/// Runs the initializer; the error is a result tag and payload.
fn run_init(init: InitBlob, exe: (u64, u64)) -> Result<(), (u8, Vec<u8>)> {
    let call = match &init.target {
        WireTarget::Offset(offset) => launch::trampoline_at(exe, *offset).ok_or_else(|| {
            (
                launch::TAG_UNKNOWN_TASK,
                b"the pool's parent runs a different executable".to_vec(),
            )
        })?,
        WireTarget::Named(name) => crate::task::lookup(name)
            .map_err(|e| (launch::TAG_UNKNOWN_TASK, e.to_string().into_bytes()))?,
    };
    let fds: Vec<OwnedFd> = init
        .fds
        .into_iter()
        .filter_map(|fd| Arc::try_unwrap(fd.0).ok())
        .collect();
    let args = init.args;
    let (tag, payload) = crate::handle::with_incoming(fds, || run_item(call, &args));
    if tag == launch::TAG_RETURNED {
        Ok(())
    } else {
        Err((tag, payload))
    }
}
