//! The wire types between proxies and the server: a closed set of typed
//! operations (there is no call-by-name), each one codec frame.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::error::{Error, ErrorKind};

/// Bytes of one encoded value.
pub(crate) type Bytes = ByteBuf;

/// What kind of object an id names; a request for another kind's operation
/// is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    Map,
    List,
    Namespace,
    Value,
    Lock,
    RLock,
    Event,
    Semaphore,
    Queue,
    JoinableQueue,
    Barrier,
    Condition,
    Array,
    Custom,
}

/// How to make an object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Create {
    Map,
    List,
    Namespace,
    Value(Bytes),
    Lock {
        reentrant: bool,
    },
    Event,
    Semaphore {
        value: u64,
        bounded: bool,
    },
    Queue {
        maxsize: u64,
        joinable: bool,
    },
    Barrier {
        parties: u64,
    },
    Condition,
    Array(Vec<Bytes>),
    /// A registered custom type, by name, from its encoded initial value.
    Custom(String, Bytes),
}

/// The first message after the auth handshake.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub session: u64,
    /// A local client (Unix socket) sends its request and reply rings
    /// right after this message (`link.rs`).
    #[serde(default)]
    pub rings: bool,
}

/// The server's answer to [`Hello`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Welcome {
    pub instance: u64,
    /// Whether the server took the client's rings (the link is in ring
    /// mode from the next request on); if not, the socket carries all.
    #[serde(default)]
    pub rings: bool,
    /// For a server on TCP: an abstract Unix socket name it also listens
    /// on, so that a client on the same host (and network namespace) can
    /// reconnect there and use shared-memory rings.
    #[serde(default)]
    pub local: Option<String>,
}

/// One request: an operation on an object (`object` 0 for the manager).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub object: u64,
    pub op: Op,
    /// Pipelined: the server sends no reply (only `Put` may be quiet; a
    /// failure is answered to the connection's next request instead).
    #[serde(default)]
    pub quiet: bool,
}

/// Timeouts travel as microseconds; `None` waits as long as it takes.
pub(crate) type Micros = Option<u64>;

/// Every operation a client can ask for.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    // ----- the manager (object 0) -----
    Create(Create, Option<String>),
    // ----- maps (and namespaces: keys are the encoded names) -----
    MapGet(Bytes),
    MapInsert(Bytes, Bytes),
    MapRemove(Bytes),
    MapContains(Bytes),
    MapLen,
    MapKeys,
    MapValues,
    MapItems,
    MapClear,
    MapUpdate(Vec<(Bytes, Bytes)>),
    // ----- lists -----
    ListPush(Bytes),
    ListExtend(Vec<Bytes>),
    ListGet(i64),
    ListSet(i64, Bytes),
    ListInsert(i64, Bytes),
    ListPop(Option<i64>),
    ListLen,
    ListItems,
    ListClear,
    // ----- values -----
    ValueGet,
    ValueSet(Bytes),
    // ----- locks: `thread` names the client thread (for RLock owners) -----
    Acquire {
        thread: u64,
        timeout: Micros,
    },
    Release {
        thread: u64,
    },
    Locked,
    // ----- conditions (a reentrant lock plus waiters) -----
    CondWait {
        thread: u64,
        timeout: Micros,
    },
    CondNotify {
        thread: u64,
        n: u64,
    },
    // ----- events -----
    EventSet,
    EventClear,
    EventIsSet,
    EventWait(Micros),
    // ----- semaphores -----
    SemAcquire(Micros),
    SemRelease,
    SemValue,
    // ----- queues -----
    Put(Bytes, Micros),
    /// Many items in one request, each waiting for room as `Put` does.
    PutMany(Vec<Bytes>),
    Get(Micros),
    Qsize,
    TaskDone,
    Join(Micros),
    Abandoned,
    /// A client on this host asks for a plain queue's ring: the reply
    /// (`Unit`) is followed on the socket by the ring itself (its fd), so
    /// only over a socket-mode link.
    Attach,
    // ----- barriers -----
    BarrierWait(Micros),
    BarrierAbort,
    BarrierReset,
    BarrierState,
    // ----- custom objects: a declared method, its encoded arguments -----
    Custom(String, Bytes),
}

/// A successful reply.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Out {
    Unit,
    Bool(bool),
    Count(u64),
    Item(Option<Bytes>),
    Items(Vec<Bytes>),
    Pairs(Vec<(Bytes, Bytes)>),
    Created(u64, Kind),
    /// Never sent: the server's own mark for a `get` whose answer another
    /// thread already wrote to the client (a put handed its item over).
    Handed,
}

/// An error reply: a kind and a message, rebuilt as a brood [`Error`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<Error> for WireError {
    fn from(e: Error) -> WireError {
        WireError {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Error {
        Error::simple(e.kind, e.message)
    }
}

/// The reply frame.
pub(crate) type Reply = Result<Out, WireError>;
