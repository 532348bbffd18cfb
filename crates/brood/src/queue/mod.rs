//! Queues between processes: [`Queue`], [`SimpleQueue`], [`JoinableQueue`]
//! (Python's `multiprocessing` queues).
//!
//! A queue is a ring of messages in shared memory: `put` copies the encoded
//! value in and returns, `get` takes the oldest one out. There is no feeder
//! thread and no pipe, so a child can put a large message, exit and be
//! joined before anyone reads it; a producer or consumer killed in the
//! middle of `put` or `get` neither corrupts the queue nor blocks the
//! others (at most the one message in its hands is lost). A queue crosses
//! to a child like a [`Value`](crate::Value): as an argument (alone or
//! inside another value), or captured by a forked closure; and to any
//! process at the end of a Unix [`Connection`] with
//! [`Queue::send_to`]/[`Queue::recv_from`]. Every copy is the same queue.
//!
//! ```
//! use brood::{Process, Queue};
//!
//! let q = Queue::<(u32, String)>::bounded(3)?;
//! let mut child = Process::with_args(
//!     |q: Queue<(u32, String)>| {
//!         for i in 0..5 {
//!             q.put((i, format!("job {i}"))).unwrap();
//!         }
//!     },
//!     q.clone(),
//! );
//! child.start()?;
//! for i in 0..5 {
//!     assert_eq!(q.get().unwrap(), (i, format!("job {i}")));
//! }
//! child.join()?;
//! # Ok::<(), brood::Error>(())
//! ```
//!
//! The ring protocol, its invariants and what a SIGKILL loses are
//! described in `queue/README.md`.

use crate::shm::ring;

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::shm::BlockWire;
use crate::sync::futex::Deadline;
use ring::{Fail, KIND_JOINABLE, KIND_QUEUE, KIND_SIMPLE, Ring, Wait};

/// Why a put did not happen; the value comes back inside.
///
/// ```
/// use brood::queue::PutError;
///
/// let q = brood::Queue::bounded(1)?;
/// q.put(1)?;
/// assert_eq!(q.try_put(2), Err(PutError::Full(2)));
/// q.close();
/// assert_eq!(q.put(3).unwrap_err().into_inner(), 3);
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutError<T> {
    /// The queue is full and the put could not wait (`try_put`, or Python's
    /// `block=False` / a timeout that ran out).
    Full(T),
    /// `put_timeout` ran out of time.
    Timeout(T),
    /// The queue was closed.
    Closed(T),
    /// The value could not be encoded (the codec's message).
    Encode(T, String),
    /// The queue's shared memory was scribbled on (the message).
    Corrupt(T, String),
}

impl<T> PutError<T> {
    /// The value that was not put.
    ///
    /// ```
    /// let err = brood::queue::PutError::Full("kept");
    /// assert_eq!(err.into_inner(), "kept");
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(v)
            | PutError::Timeout(v)
            | PutError::Closed(v)
            | PutError::Encode(v, _)
            | PutError::Corrupt(v, _) => v,
        }
    }

    /// Whether the queue was full (or the wait for room timed out).
    ///
    /// ```
    /// assert!(brood::queue::PutError::Full(0).is_full());
    /// assert!(brood::queue::PutError::Timeout(0).is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, PutError::Full(_) | PutError::Timeout(_))
    }

    /// The same error around another value.
    fn with_value<U>(self, value: U) -> PutError<U> {
        match self {
            PutError::Full(_) => PutError::Full(value),
            PutError::Timeout(_) => PutError::Timeout(value),
            PutError::Closed(_) => PutError::Closed(value),
            PutError::Encode(_, m) => PutError::Encode(value, m),
            PutError::Corrupt(_, m) => PutError::Corrupt(value, m),
        }
    }

    fn from_fail(fail: Fail, value: T, api: Api) -> PutError<T> {
        match (fail, api) {
            (Fail::WouldBlock | Fail::TimedOut, Api::Timed) => PutError::Timeout(value),
            (Fail::WouldBlock | Fail::TimedOut, _) => PutError::Full(value),
            (Fail::Closed, _) => PutError::Closed(value),
            (Fail::Corrupt(m), _) => PutError::Corrupt(value, m),
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("the queue is full"),
            PutError::Timeout(_) => f.write_str("timed out waiting for room in the queue"),
            PutError::Closed(_) => f.write_str("the queue is closed"),
            PutError::Encode(_, m) => write!(f, "{m}"),
            PutError::Corrupt(_, m) => write!(f, "{m}"),
        }
    }
}

impl<T: fmt::Debug> std::error::Error for PutError<T> {}

impl<T> From<PutError<T>> for Error {
    fn from(e: PutError<T>) -> Error {
        let kind = match e {
            PutError::Full(_) | PutError::Timeout(_) => ErrorKind::Timeout,
            PutError::Closed(_) => ErrorKind::Closed,
            PutError::Encode(..) => ErrorKind::Codec,
            PutError::Corrupt(..) => ErrorKind::InvalidState,
        };
        Error::simple(kind, e.to_string())
    }
}

/// Why a get returned no message.
///
/// ```
/// use brood::queue::GetError;
/// use std::time::Duration;
///
/// let q = brood::Queue::<u8>::new()?;
/// assert_eq!(q.try_get(), Err(GetError::Empty));
/// assert_eq!(q.get_timeout(Duration::from_millis(1)), Err(GetError::Timeout));
/// q.close();
/// assert_eq!(q.get(), Err(GetError::Closed));
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetError {
    /// Nothing to take and the get could not wait (`try_get`, or Python's
    /// `block=False` / a timeout that ran out: Python's `queue.Empty`).
    Empty,
    /// `get_timeout` ran out of time.
    Timeout,
    /// The queue is closed and everything put was taken.
    Closed,
    /// The message could not be decoded as the queue's type (it is gone).
    Decode(String),
    /// The queue's shared memory was scribbled on: what was in it is
    /// discarded, and the queue goes on.
    Corrupt(String),
}

impl GetError {
    /// Whether nothing was there (or the wait timed out).
    ///
    /// ```
    /// assert!(brood::queue::GetError::Empty.is_empty());
    /// assert!(brood::queue::GetError::Timeout.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        matches!(self, GetError::Empty | GetError::Timeout)
    }

    fn from_fail(fail: Fail, api: Api) -> GetError {
        match (fail, api) {
            (Fail::WouldBlock | Fail::TimedOut, Api::Timed) => GetError::Timeout,
            (Fail::WouldBlock | Fail::TimedOut, _) => GetError::Empty,
            (Fail::Closed, _) => GetError::Closed,
            (Fail::Corrupt(m), _) => GetError::Corrupt(m),
        }
    }
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Empty => f.write_str("the queue is empty"),
            GetError::Timeout => f.write_str("timed out waiting for a message"),
            GetError::Closed => f.write_str("the queue is closed and empty"),
            GetError::Decode(m) | GetError::Corrupt(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for GetError {}

impl From<GetError> for Error {
    fn from(e: GetError) -> Error {
        let kind = match e {
            GetError::Empty | GetError::Timeout => ErrorKind::Timeout,
            GetError::Closed => ErrorKind::Closed,
            GetError::Decode(_) => ErrorKind::Codec,
            GetError::Corrupt(_) => ErrorKind::InvalidState,
        };
        Error::simple(kind, e.to_string())
    }
}

/// How to make a queue: a bound in messages and the ring's size in bytes.
///
/// ```
/// use brood::queue::{Options, Queue};
///
/// let q: Queue<Vec<u8>> = Queue::with_options(Options::new().maxsize(8).max_bytes(1 << 16))?;
/// assert_eq!(q.maxsize(), Some(8));
/// assert_eq!(q.max_bytes(), 1 << 16);
/// # Ok::<(), brood::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Options {
    maxsize: usize,
    bytes: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options::new()
    }
}

impl Options {
    /// No bound in messages, a 1 GiB ring (sparse: memory is used only as
    /// far as the backlog reaches).
    ///
    /// ```
    /// let q: brood::Queue<u8> = brood::Queue::with_options(brood::queue::Options::new())?;
    /// assert_eq!(q.maxsize(), None);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new() -> Options {
        Options {
            maxsize: 0,
            bytes: ring::DEFAULT_BYTES,
        }
    }

    /// At most `n` messages in the queue (Python's `maxsize`; 0: no bound).
    ///
    /// ```
    /// let q: brood::Queue<u8> =
    ///     brood::Queue::with_options(brood::queue::Options::new().maxsize(2))?;
    /// assert_eq!(q.maxsize(), Some(2));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn maxsize(mut self, n: usize) -> Options {
        self.maxsize = n;
        self
    }

    /// The ring's size in bytes: the bound in bytes (rounded up to a power
    /// of two, at least 4096). Each message takes its encoded length plus
    /// 8 to 15 bytes; one longer than half the ring passes in pieces.
    ///
    /// ```
    /// let q: brood::Queue<u8> =
    ///     brood::Queue::with_options(brood::queue::Options::new().max_bytes(5000))?;
    /// assert_eq!(q.max_bytes(), 8192);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn max_bytes(mut self, bytes: usize) -> Options {
        self.bytes = bytes as u64;
        self
    }
}

/// Which family of calls reports a wait that could not happen: `try_*`
/// and Python's `*_with` say Full/Empty, `*_timeout` says Timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Plain,
    Timed,
}

/// The encoded size of `value` (a counting pass, no copy), or `None` if
/// it cannot be encoded (the buffered path then reports the codec's error).
fn encoded_len<T: Serialize>(value: &T) -> Option<usize> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    rmp_serde::encode::write_named(&mut c, value).ok()?;
    Some(c.0)
}

/// Writes into a slice of the ring; refuses to run past it.
struct SliceWriter<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl std::io::Write for SliceWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let end = self.at + b.len();
        if end > self.buf.len() {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.buf[self.at..end].copy_from_slice(b);
        self.at = end;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn type_hash<T>() -> u64 {
    ring::type_hash(std::any::type_name::<T>())
}

/// A first-in first-out queue between processes (Python's
/// `multiprocessing.Queue`): any number of producers and consumers, in any
/// process of any start method.
///
/// ```
/// use brood::Queue;
/// use std::time::Duration;
///
/// let q = Queue::bounded(2)?;
/// q.put('a')?;
/// q.put('b')?;
/// assert!(q.is_full());
/// assert!(q.put_timeout('c', Duration::from_millis(10)).unwrap_err().is_full());
/// assert_eq!(q.get()?, 'a');
/// assert_eq!(q.qsize(), 1);
/// # Ok::<(), brood::Error>(())
/// ```
///
/// # Caveats
///
/// - Messages are encoded with brood's [`codec`]: values holding file
///   descriptors (a `SharedMemory`, a `Lock`, another queue) cannot travel
///   *through* a queue (`put` refuses them with the codec's message); hand
///   those to a child as arguments.
/// - [`close`](Queue::close) closes the queue for every process (Python's
///   `close` only stops the calling process's feeder thread).
/// - `Queue::new()` holds up to 1 GiB of encoded messages (sparse memory,
///   used only as far as the backlog reaches); past that, `put` waits.
pub struct Queue<T> {
    ring: Ring,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            ring: self.ring.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.ring.qsize())
            .field("maxsize", &self.ring.maxsize())
            .field("closed", &self.ring.is_closed())
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// An unbounded queue (Python's `Queue()`): up to 1 GiB of encoded
    /// messages; memory is used only as far as the backlog reaches.
    ///
    /// ```
    /// let q = brood::Queue::new()?;
    /// q.put(vec![1, 2, 3])?;
    /// assert_eq!(q.get()?, [1, 2, 3]);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new() -> Result<Queue<T>> {
        Queue::with_options(Options::new())
    }

    /// A queue of at most `maxsize` messages (Python's `Queue(maxsize)`;
    /// 0 means no bound, as in Python).
    ///
    /// ```
    /// let q = brood::Queue::bounded(1)?;
    /// q.put(1u8)?;
    /// assert!(q.is_full());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn bounded(maxsize: usize) -> Result<Queue<T>> {
        Queue::with_options(Options::new().maxsize(maxsize))
    }

    /// A queue made to `options` (a bound in messages, the ring's bytes).
    /// A message larger than half the ring passes in pieces, while a
    /// consumer takes them.
    ///
    /// ```
    /// use brood::queue::{Options, Queue};
    /// let q: Queue<String> = Queue::with_options(Options::new().max_bytes(4096))?;
    /// let reader = q.clone();
    /// let reader = std::thread::spawn(move || reader.get().unwrap());
    /// q.put("x".repeat(100_000))?;
    /// assert_eq!(reader.join().unwrap().len(), 100_000);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn with_options(options: Options) -> Result<Queue<T>> {
        Queue::create(KIND_QUEUE, options)
    }

    fn create(kind: u32, options: Options) -> Result<Queue<T>> {
        Ok(Queue {
            ring: Ring::new(
                kind,
                type_hash::<T>(),
                options.maxsize as u64,
                options.bytes,
            )?,
            _type: PhantomData,
        })
    }

    fn put_wait(&self, value: T, wait: Wait, api: Api) -> std::result::Result<(), PutError<T>> {
        let result = self
            .put_wait_ref(&value, wait, api)
            .map_err(|e| e.with_value(()));
        result.map_err(|e| e.with_value(value))
    }

    fn put_wait_ref<'a>(
        &self,
        value: &'a T,
        wait: Wait,
        api: Api,
    ) -> std::result::Result<(), PutError<&'a T>> {
        // Straight into the ring when the encoded size is known and fits
        // one record: one copy fewer than through a buffer.
        if let Some(len) = encoded_len(value) {
            let fill = |dst: &mut [u8]| {
                let mut w = SliceWriter { buf: dst, at: 0 };
                rmp_serde::encode::write_named(&mut w, value).is_ok() && w.at == w.buf.len()
            };
            match self.ring.put_direct(len, wait, fill) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(fail) => return Err(PutError::from_fail(fail, value, api)),
            }
        }
        let outcome = ring::with_buffer(|buf| match codec::encode_into(buf, value) {
            Err(e) => Err(e.to_string()),
            Ok(()) => Ok(self.ring.put(buf, wait)),
        });
        match outcome {
            Err(message) => Err(PutError::Encode(value, message)),
            Ok(Ok(())) => Ok(()),
            Ok(Err(fail)) => Err(PutError::from_fail(fail, value, api)),
        }
    }

    fn get_wait(&self, wait: Wait, api: Api) -> std::result::Result<T, GetError> {
        match self.ring.get(wait, codec::decode::<T>) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(GetError::Decode(e.to_string())),
            Err(fail) => Err(GetError::from_fail(fail, api)),
        }
    }

    /// Puts `value` at the back, waiting for room as long as it takes
    /// (Python's `put(obj)`). When it returns `Ok`, the message is in the
    /// queue: the process may exit at once.
    ///
    /// ```
    /// let q = brood::Queue::new()?;
    /// q.put(String::from("hello"))?;
    /// assert_eq!(q.get()?, "hello");
    /// # Ok::<(), brood::Error>(())
    /// ```
    ///
    /// A message larger than half the ring goes in pieces, and `put` returns
    /// once the last piece is in (consumers take the first ones meanwhile).
    pub fn put(&self, value: T) -> std::result::Result<(), PutError<T>> {
        self.put_wait(value, Wait::forever(), Api::Plain)
    }

    /// Puts a copy of `*value` (waiting as [`put`](Queue::put) does),
    /// leaving the caller its value: no clone needed to put the same
    /// buffer again.
    ///
    /// ```
    /// let q = brood::Queue::new()?;
    /// let block = vec![7u8; 1000];
    /// q.put_ref(&block)?;
    /// q.put_ref(&block)?;
    /// assert_eq!(q.qsize(), 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn put_ref<'a>(&self, value: &'a T) -> std::result::Result<(), PutError<&'a T>> {
        self.put_wait_ref(value, Wait::forever(), Api::Plain)
    }

    /// Puts `value`, waiting at most `timeout` for room
    /// ([`PutError::Timeout`]); a zero timeout polls once and never sleeps.
    /// `Duration::MAX` waits forever.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = brood::Queue::bounded(1)?;
    /// q.put_timeout(1, Duration::ZERO)?;
    /// assert_eq!(q.put_timeout(2, Duration::ZERO), Err(brood::queue::PutError::Timeout(2)));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn put_timeout(&self, value: T, timeout: Duration) -> std::result::Result<(), PutError<T>> {
        self.put_wait(value, Wait::timeout(timeout), Api::Timed)
    }

    /// Puts `value` if there is room now ([`PutError::Full`] otherwise),
    /// without waiting for room (Python's `put_nowait`). When there is
    /// room but another producer is in the middle of its put (its copy
    /// holds the queue's lock), it waits for that put, up to 1 s, rather
    /// than say `Full`; a full queue says `Full` at once.
    ///
    /// ```
    /// let q = brood::Queue::bounded(1)?;
    /// q.try_put('a')?;
    /// assert_eq!(q.try_put('b'), Err(brood::queue::PutError::Full('b')));
    /// # Ok::<(), brood::Error>(())
    /// ```
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, value: T) -> std::result::Result<(), PutError<T>> {
        self.put_wait(value, Wait::Poll, Api::Plain)
    }

    /// Python's `put(obj, block, timeout)`: `block=false` polls once
    /// whatever the timeout; a timeout that runs out is [`PutError::Full`]
    /// (Python's `queue.Full`).
    ///
    /// ```
    /// let q = brood::Queue::bounded(1)?;
    /// q.put_with(1, true, None)?;
    /// let long = Some(std::time::Duration::from_secs(3600));
    /// assert_eq!(q.put_with(2, false, long), Err(brood::queue::PutError::Full(2)));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn put_with(
        &self,
        value: T,
        block: bool,
        timeout: Option<Duration>,
    ) -> std::result::Result<(), PutError<T>> {
        self.put_wait(value, Wait::python(block, timeout), Api::Plain)
    }

    /// Takes the oldest message, waiting as long as it takes (Python's
    /// `get()`). [`GetError::Closed`] once the queue is closed and empty.
    ///
    /// ```
    /// let q = brood::Queue::new()?;
    /// q.put(7)?;
    /// assert_eq!(q.get()?, 7);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get(&self) -> std::result::Result<T, GetError> {
        self.get_wait(Wait::forever(), Api::Plain)
    }

    /// Takes the oldest message, waiting at most `timeout`
    /// ([`GetError::Timeout`]); a zero timeout polls once and never sleeps.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = brood::Queue::<u8>::new()?;
    /// assert_eq!(q.get_timeout(Duration::ZERO), Err(brood::queue::GetError::Timeout));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> std::result::Result<T, GetError> {
        self.get_wait(Wait::timeout(timeout), Api::Timed)
    }

    /// Takes the oldest message if there is one ([`GetError::Empty`]
    /// otherwise), without waiting for one (Python's `get_nowait`). When a
    /// message is there but another consumer is in the middle of its get,
    /// it waits for that get, up to 1 s, rather than say `Empty` (Python's
    /// says `Empty` then); an empty queue says `Empty` at once.
    ///
    /// ```
    /// let q = brood::Queue::<u8>::new()?;
    /// assert_eq!(q.try_get(), Err(brood::queue::GetError::Empty));
    /// # Ok::<(), brood::Error>(())
    /// ```
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> std::result::Result<T, GetError> {
        self.get_wait(Wait::Poll, Api::Plain)
    }

    /// Python's `get(block, timeout)`: `block=false` polls once whatever
    /// the timeout; a timeout that runs out is [`GetError::Empty`]
    /// (Python's `queue.Empty`).
    ///
    /// ```
    /// let q = brood::Queue::<u8>::new()?;
    /// let t = Some(std::time::Duration::from_millis(5));
    /// assert_eq!(q.get_with(true, t), Err(brood::queue::GetError::Empty));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get_with(
        &self,
        block: bool,
        timeout: Option<Duration>,
    ) -> std::result::Result<T, GetError> {
        self.get_wait(Wait::python(block, timeout), Api::Plain)
    }
}

impl<T> Queue<T> {
    /// The number of messages in the queue (Python's `qsize()`): exact
    /// while no one puts or gets, a snapshot otherwise.
    ///
    /// ```
    /// let q = brood::Queue::new()?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// assert_eq!(q.qsize(), 2);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn qsize(&self) -> usize {
        self.ring.qsize() as usize
    }

    /// Whether the queue holds no message (Python's `empty()`).
    ///
    /// ```
    /// assert!(brood::Queue::<u8>::new()?.is_empty());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether a bounded queue holds `maxsize` messages (Python's
    /// `full()`); an unbounded queue is never full.
    ///
    /// ```
    /// let q = brood::Queue::bounded(1)?;
    /// assert!(!q.is_full());
    /// q.put(0)?;
    /// assert!(q.is_full());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_full(&self) -> bool {
        self.maxsize().is_some_and(|m| self.qsize() >= m)
    }

    /// The bound in messages, if any.
    ///
    /// ```
    /// assert_eq!(brood::Queue::<u8>::bounded(3)?.maxsize(), Some(3));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn maxsize(&self) -> Option<usize> {
        match self.ring.maxsize() {
            0 => None,
            n => Some(n as usize),
        }
    }

    /// The ring's size in bytes.
    ///
    /// ```
    /// assert_eq!(brood::Queue::<u8>::new()?.max_bytes(), 1 << 30);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn max_bytes(&self) -> usize {
        self.ring.capacity_bytes() as usize
    }

    /// Closes the queue for every process: later puts fail with
    /// [`PutError::Closed`], gets take what is left and then report
    /// [`GetError::Closed`]; sleepers wake up.
    ///
    /// ```
    /// let q = brood::Queue::new()?;
    /// q.put(1)?;
    /// q.close();
    /// assert!(q.put(2).is_err());
    /// assert_eq!(q.get()?, 1);
    /// assert_eq!(q.get(), Err(brood::queue::GetError::Closed));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn close(&self) {
        self.ring.close()
    }

    /// Whether [`close`](Queue::close) was called (by any process).
    ///
    /// ```
    /// let q = brood::Queue::<u8>::new()?;
    /// assert!(!q.is_closed());
    /// q.close();
    /// assert!(q.is_closed());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.ring.is_closed()
    }
}

/// The most fds a queue handed over a connection may come with.
const MAX_FDS: u32 = 4;

/// Sends `value` (a queue: its encoding and its memfd) over `conn`: one
/// frame with the fd count and the encoded bytes, then each fd
/// (`SCM_RIGHTS`).
fn send_over<Q: Serialize>(value: &Q, conn: &mut Connection) -> Result<()> {
    let (bytes, fds) = crate::handle::encode_with_fds(value)?;
    conn.send(&(fds.len() as u32, serde_bytes::Bytes::new(&bytes)))?;
    for fd in &fds {
        conn.send_fd(fd)?;
    }
    Ok(())
}

/// Receives what [`send_over`] sent.
fn recv_over<Q: DeserializeOwned>(conn: &mut Connection) -> Result<Q> {
    let (n, bytes): (u32, serde_bytes::ByteBuf) = conn.recv()?;
    if n > MAX_FDS {
        return Err(Error::simple(
            ErrorKind::Codec,
            format!("a queue comes with at most {MAX_FDS} fds, not {n}"),
        ));
    }
    let mut fds = Vec::with_capacity(n as usize);
    for _ in 0..n {
        fds.push(conn.recv_fd()?);
    }
    crate::handle::with_incoming(fds, || codec::decode::<Q>(&bytes))
}

macro_rules! over_connection {
    ($ty:ident, $make:literal) => {
        impl<T> $ty<T> {
            /// Hands this queue to the process at the other end of `conn`
            /// (a Unix connection: `pipe`, or a `Listener`/`Client` on a
            /// Unix address), which gets it with
            /// [`recv_from`](Self::recv_from): the same queue, not a copy.
            ///
            /// ```
            #[doc = concat!("use brood::", stringify!($ty), ";")]
            /// let (mut here, mut there) = brood::pipe(true)?;
            #[doc = concat!("let q = ", $make, ";")]
            /// q.send_to(&mut here)?;
            #[doc = concat!("let same: ", stringify!($ty), "<u8> = ", stringify!($ty), "::recv_from(&mut there)?;")]
            /// same.put(1)?;
            /// assert_eq!(q.get()?, 1);
            /// # Ok::<(), brood::Error>(())
            /// ```
            pub fn send_to(&self, conn: &mut Connection) -> Result<()> {
                send_over(self, conn)
            }

            /// Receives a queue sent with [`send_to`](Self::send_to); one of
            /// another type or kind is refused (see `send_to`'s example).
            pub fn recv_from(conn: &mut Connection) -> Result<$ty<T>> {
                recv_over(conn)
            }
        }
    };
}

over_connection!(Queue, "Queue::<u8>::new()?");
over_connection!(SimpleQueue, "SimpleQueue::<u8>::new()?");
over_connection!(JoinableQueue, "JoinableQueue::<u8>::new()?");

fn serialize_ring<S: Serializer>(ring: &Ring, s: S) -> std::result::Result<S::Ok, S::Error> {
    ring.block().serialize(s)
}

fn deserialize_ring<'de, D: Deserializer<'de>>(
    d: D,
    kinds: &[u32],
    hash: u64,
) -> std::result::Result<Ring, D::Error> {
    let wire = BlockWire::deserialize(d)?;
    let mut last = None;
    for &kind in kinds {
        match Ring::from_wire(wire.clone(), kind, hash) {
            Ok(r) => return Ok(r),
            Err(e) => last = Some(e),
        }
    }
    Err(serde::de::Error::custom(last.map_or_else(
        || "no queue kind".to_string(),
        |e| e.to_string(),
    )))
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_ring(&self.ring, s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // A JoinableQueue is a Queue too.
        Ok(Queue {
            ring: deserialize_ring(d, &[KIND_QUEUE, KIND_JOINABLE], type_hash::<T>())?,
            _type: PhantomData,
        })
    }
}

/// An unbounded queue with `put`, `get`, `is_empty` and `close` only
/// (Python's `multiprocessing.SimpleQueue`).
///
/// ```
/// let q = brood::SimpleQueue::new()?;
/// let mut child = brood::Process::with_args(
///     |q: brood::SimpleQueue<u64>| q.put(6 * 7).unwrap(),
///     q.clone(),
/// );
/// child.start()?;
/// child.join()?;
/// assert_eq!(q.get()?, 42);
/// assert!(q.is_empty());
/// # Ok::<(), brood::Error>(())
/// ```
pub struct SimpleQueue<T> {
    inner: Queue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue")
            .field("empty", &self.inner.is_empty())
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A new, empty queue.
    ///
    /// ```
    /// assert!(brood::SimpleQueue::<u8>::new()?.is_empty());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new() -> Result<SimpleQueue<T>> {
        Ok(SimpleQueue {
            inner: Queue::create(KIND_SIMPLE, Options::new())?,
        })
    }

    /// Puts `value` at the back (Python's `put`).
    ///
    /// ```
    /// let q = brood::SimpleQueue::new()?;
    /// q.put(String::from("x"))?;
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn put(&self, value: T) -> std::result::Result<(), PutError<T>> {
        self.inner.put(value)
    }

    /// Takes the oldest message, waiting as long as it takes (Python's
    /// `get`); [`GetError::Closed`] once closed and empty.
    ///
    /// ```
    /// let q = brood::SimpleQueue::new()?;
    /// q.put(1.5)?;
    /// assert_eq!(q.get()?, 1.5);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn get(&self) -> std::result::Result<T, GetError> {
        self.inner.get()
    }
}

impl<T> SimpleQueue<T> {
    /// Whether the queue holds no message (Python's `empty()`).
    ///
    /// ```
    /// let q = brood::SimpleQueue::new()?;
    /// q.put(0)?;
    /// assert!(!q.is_empty());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Closes the queue for every process (see [`Queue::close`]).
    ///
    /// ```
    /// let q = brood::SimpleQueue::<u8>::new()?;
    /// q.close();
    /// assert!(q.put(1).is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn close(&self) {
        self.inner.close()
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_ring(&self.inner.ring, s)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(SimpleQueue {
            inner: Queue {
                ring: deserialize_ring(d, &[KIND_SIMPLE], type_hash::<T>())?,
                _type: PhantomData,
            },
        })
    }
}

/// A [`Queue`] that also counts unfinished tasks (Python's
/// `multiprocessing.JoinableQueue`): every put adds one, every
/// [`task_done`](JoinableQueue::task_done) takes one away, and
/// [`join`](JoinableQueue::join) waits for none to be left. All of
/// `Queue`'s methods are available (it dereferences to one).
///
/// ```
/// let q = brood::JoinableQueue::new()?;
/// let mut worker = brood::Process::with_args(
///     |q: brood::JoinableQueue<u32>| {
///         while let Ok(job) = q.get() {
///             let _ = job * 2;
///             q.task_done().unwrap();
///         }
///     },
///     q.clone(),
/// );
/// worker.start()?;
/// for job in 0..10 {
///     q.put(job)?;
/// }
/// q.join(); // every job was taken and done
/// q.close();
/// worker.join()?;
/// # Ok::<(), brood::Error>(())
/// ```
///
/// # Caveats
///
/// A consumer killed between `get` and `task_done` leaves its task
/// unfinished for ever, so `join` waits for ever (as in Python): use
/// [`join_timeout`](JoinableQueue::join_timeout) where that can happen.
pub struct JoinableQueue<T> {
    inner: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("qsize", &self.inner.qsize())
            .field("unfinished", &self.unfinished_tasks())
            .finish()
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.inner
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// An unbounded joinable queue.
    ///
    /// ```
    /// let q = brood::JoinableQueue::<u8>::new()?;
    /// assert_eq!(q.unfinished_tasks(), 0);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn new() -> Result<JoinableQueue<T>> {
        JoinableQueue::with_options(Options::new())
    }

    /// A joinable queue of at most `maxsize` messages (0: no bound).
    ///
    /// ```
    /// let q = brood::JoinableQueue::bounded(1)?;
    /// q.put(1)?;
    /// assert!(q.is_full());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn bounded(maxsize: usize) -> Result<JoinableQueue<T>> {
        JoinableQueue::with_options(Options::new().maxsize(maxsize))
    }

    /// A joinable queue made to `options`.
    ///
    /// ```
    /// let q: brood::JoinableQueue<u8> =
    ///     brood::JoinableQueue::with_options(brood::queue::Options::new().maxsize(4))?;
    /// assert_eq!(q.maxsize(), Some(4));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn with_options(options: Options) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue {
            inner: Queue::create(KIND_JOINABLE, options)?,
        })
    }
}

impl<T> JoinableQueue<T> {
    /// Marks one task taken with `get` as done (Python's `task_done()`).
    /// Calling it more times than messages were put is an
    /// [`InvalidState`](ErrorKind::InvalidState) error (Python's
    /// `ValueError`), and changes nothing.
    ///
    /// ```
    /// let q = brood::JoinableQueue::new()?;
    /// q.put(1)?;
    /// q.get()?;
    /// q.task_done()?;
    /// assert!(q.task_done().is_err());
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<()> {
        if self.inner.ring.task_done() {
            Ok(())
        } else {
            Err(Error::invalid("task_done() called too many times"))
        }
    }

    /// Tasks put and not yet marked done.
    ///
    /// ```
    /// let q = brood::JoinableQueue::new()?;
    /// q.put('a')?;
    /// assert_eq!(q.unfinished_tasks(), 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn unfinished_tasks(&self) -> usize {
        self.inner.ring.unfinished() as usize
    }

    /// Waits until every task put has been marked done (Python's `join()`).
    ///
    /// ```
    /// let q = brood::JoinableQueue::<u8>::new()?;
    /// q.join(); // nothing put: returns at once
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn join(&self) {
        self.inner.ring.join(Deadline::after(None));
    }

    /// Waits at most `timeout` for every task to be done; whether they are.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = brood::JoinableQueue::new()?;
    /// q.put(1)?;
    /// assert!(!q.join_timeout(Duration::from_millis(5)));
    /// q.get()?;
    /// q.task_done()?;
    /// assert!(q.join_timeout(Duration::ZERO));
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.inner.ring.join(Deadline::after(Some(timeout)))
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_ring(&self.inner.ring, s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(JoinableQueue {
            inner: Queue {
                ring: deserialize_ring(d, &[KIND_JOINABLE], type_hash::<T>())?,
                _type: PhantomData,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cross<A: Serialize, B: DeserializeOwned>(a: &A) -> Result<B> {
        let (bytes, fds) = crate::handle::encode_with_fds(a)?;
        crate::handle::decode_with_fds(&bytes, fds)
    }

    #[test]
    fn a_queue_received_as_another_type_or_kind_is_refused() {
        let q = Queue::<u32>::new().unwrap();
        assert!(cross::<_, Queue<String>>(&q).is_err());
        assert!(cross::<_, SimpleQueue<u32>>(&q).is_err());
        assert!(cross::<_, JoinableQueue<u32>>(&q).is_err());
        let same: Queue<u32> = cross(&q).unwrap();
        same.put(5).unwrap();
        assert_eq!(q.get(), Ok(5));
        // A JoinableQueue is a Queue too.
        let j = JoinableQueue::<u32>::new().unwrap();
        let as_queue: Queue<u32> = cross(&j).unwrap();
        as_queue.put(1).unwrap();
        assert_eq!(j.unfinished_tasks(), 1);
    }
}
