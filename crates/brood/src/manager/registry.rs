//! The server-side objects and the operations each accepts.
//!
//! Every object is its state behind one mutex plus a condition variable
//! notified on every change; blocking operations wait on it in slices of
//! [`POLL`], asking between slices whether their client is still there.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use std::any::Any;

use super::custom::{self, SharedType};
use super::protocol::{Bytes, Create, Kind, Micros, Op, Out, WireError};
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::queue::{GetError, PutError};

/// How often a blocked operation checks that its client is still connected.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// Who is asking: the client session, and how to tell it left.
pub(crate) struct Caller<'a> {
    pub session: u64,
    pub gone: &'a mut dyn FnMut() -> bool,
    /// A handle for writing to this client's socket with a deadline (a
    /// `dup` of it, made once per connection): a `get` on a ring queue
    /// writes its own answer, so that an item never sticks in a
    /// connection that does not take it. `None` for a ring-mode link (the
    /// answer goes through the link's ring, read by brood's own proxy).
    pub writer: &'a mut dyn FnMut() -> Option<Writer>,
}

/// The write side of a client's connection.
pub(crate) type Writer = Arc<Mutex<Connection>>;

/// How long the answer to a `get` on a ring queue may take to go through
/// a client's socket: a client that does not take it whole (gone, or not
/// reading) has its connection cut, and the item goes back into the queue.
pub(crate) const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);

/// The ring of a plain managed queue: brood's shared-memory `Queue` of
/// codec bytes. The server keeps it, and clients on this host map it
/// (`Op::Attach`) and put and get on it themselves.
pub(crate) type RingQueue = crate::queue::Queue<Bytes>;

/// All objects of one server.
#[derive(Default)]
pub(crate) struct Registry {
    objects: RwLock<HashMap<u64, Arc<Object>>>,
    names: Mutex<HashMap<String, u64>>,
    next: AtomicU64,
    /// Objects on which a session holds a lease (a lock, taken queue items).
    leases: Mutex<HashMap<u64, HashSet<u64>>>,
}

struct Object {
    kind: Kind,
    state: Mutex<State>,
    changed: Condvar,
    /// Threads inside `changed.wait_timeout` (counted under `state`'s
    /// lock): `notify` skips the wake-up syscall when there are none, which
    /// is every call of the common, non-blocking operations.
    waiters: AtomicUsize,
    /// A queue's getters wait here instead, each put waking one of them
    /// (not every getter, only for all but one to sleep again: with N
    /// workers blocked in `get`, `notify_all` cost N wake-ups per task).
    item: Condvar,
    item_waiters: AtomicUsize,
}

enum State {
    Map(OrderedMap),
    List(Vec<Bytes>),
    Value(Bytes),
    /// Locks, reentrant locks and conditions (whose waiters hold tickets).
    Lock {
        reentrant: bool,
        holder: Option<(u64, u64)>,
        count: u64,
        waiters: VecDeque<u64>,
        notified: HashSet<u64>,
        tickets: u64,
    },
    Event(bool),
    Semaphore {
        value: u64,
        bound: Option<u64>,
    },
    /// A joinable queue (its items leased to the session that took them).
    Queue(QueueState),
    /// A plain queue: a shared-memory ring that clients on this host use
    /// directly; the server's threads use it for clients elsewhere.
    Ring(RingQueue),
    Barrier {
        parties: u64,
        count: u64,
        generation: u64,
        broken: bool,
    },
    /// A registered custom type and how to call its declared methods.
    Custom {
        object: Box<dyn Any + Send>,
        ty: &'static SharedType,
    },
}

/// A map that iterates in insertion order, like Python's `dict`.
#[derive(Default)]
struct OrderedMap {
    entries: HashMap<Bytes, (u64, Bytes)>,
    order: BTreeMap<u64, Bytes>,
    seq: u64,
}

impl OrderedMap {
    fn insert(&mut self, key: Bytes, value: Bytes) -> Option<Bytes> {
        if let Some((_, old)) = self.entries.get_mut(&key) {
            return Some(std::mem::replace(old, value));
        }
        self.seq += 1;
        self.order.insert(self.seq, key.clone());
        self.entries.insert(key, (self.seq, value));
        None
    }

    fn remove(&mut self, key: &Bytes) -> Option<Bytes> {
        let (seq, value) = self.entries.remove(key)?;
        self.order.remove(&seq);
        Some(value)
    }

    fn items(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.order.values().map(|k| (k, &self.entries[k].1))
    }
}

struct QueueState {
    items: VecDeque<Bytes>,
    maxsize: u64,
    unfinished: u64,
    /// Joinable queues: items each session took and has not marked done.
    taken: HashMap<u64, VecDeque<Bytes>>,
    /// Items taken by sessions that ended before `task_done`.
    abandoned: Vec<Bytes>,
}

fn lock_state(reentrant: bool) -> State {
    State::Lock {
        reentrant,
        holder: None,
        count: 0,
        waiters: VecDeque::new(),
        notified: HashSet::new(),
        tickets: 0,
    }
}

fn wrong(kind: Kind, op: &Op) -> Error {
    let op = format!("{op:?}");
    let name = op.split(['(', ' ', '{']).next().unwrap_or("?").to_string();
    Error::invalid(format!("a managed {kind:?} has no operation {name}"))
}

fn deadline(timeout: Micros) -> Option<Instant> {
    timeout.and_then(|us| crate::time::deadline(Duration::from_micros(us)))
}

fn index(i: i64, len: usize) -> Result<usize> {
    let j = if i < 0 { i + len as i64 } else { i };
    if j < 0 || j >= len as i64 {
        return Err(Error::invalid(format!(
            "list index {i} out of range (length {len})"
        )));
    }
    Ok(j as usize)
}

impl Object {
    /// Wakes the threads waiting for a change, if any.
    fn notify(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.changed.notify_all();
        }
    }

    /// Wakes one getter waiting for a queue item, if any.
    fn notify_item(&self) {
        if self.item_waiters.load(Ordering::SeqCst) > 0 {
            self.item.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `wait_until` on the queue-item condition (getters only).
    fn wait_for_item<'a>(
        &'a self,
        guard: MutexGuard<'a, State>,
        deadline: Option<Instant>,
        caller: &mut Caller<'_>,
    ) -> Result<Option<MutexGuard<'a, State>>> {
        let nonempty = |s: &mut State| matches!(s, State::Queue(q) if !q.items.is_empty());
        let got = self.wait_on(true, guard, deadline, caller, nonempty);
        if !matches!(got, Ok(Some(_))) {
            // A getter that leaves without an item (timed out, client
            // gone) may have been the one a put woke: pass the wake-up on.
            self.notify_item();
        }
        got
    }

    /// Waits until `ready` says yes (`Ok(Some(guard))`), the deadline passes
    /// (`Ok(None)`), or the client leaves (an error).
    fn wait_until<'a>(
        &'a self,
        guard: MutexGuard<'a, State>,
        deadline: Option<Instant>,
        caller: &mut Caller<'_>,
        ready: impl FnMut(&mut State) -> bool,
    ) -> Result<Option<MutexGuard<'a, State>>> {
        self.wait_on(false, guard, deadline, caller, ready)
    }

    fn wait_on<'a>(
        &'a self,
        for_item: bool,
        mut guard: MutexGuard<'a, State>,
        deadline: Option<Instant>,
        caller: &mut Caller<'_>,
        mut ready: impl FnMut(&mut State) -> bool,
    ) -> Result<Option<MutexGuard<'a, State>>> {
        let (cv, count) = if for_item {
            (&self.item, &self.item_waiters)
        } else {
            (&self.changed, &self.waiters)
        };
        loop {
            if ready(&mut guard) {
                return Ok(Some(guard));
            }
            let slice = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    left.min(POLL)
                }
                None => POLL,
            };
            // Counted while `guard` is held: a thread that changes the
            // state takes the lock after this, so its `notify` sees us.
            count.fetch_add(1, Ordering::SeqCst);
            guard = cv
                .wait_timeout(guard, slice)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            count.fetch_sub(1, Ordering::SeqCst);
            if (caller.gone)() {
                return Err(Error::simple(ErrorKind::Closed, "the client left"));
            }
        }
    }
}

/// One operation on a plain queue's ring, in a server thread (for a
/// client that does not map the ring: on another host, or with rings
/// off). Blocking puts and gets wait in slices of [`POLL`], asking
/// between slices whether the client is still there.
fn ring_op(q: &RingQueue, kind: Kind, op: Op, caller: &mut Caller<'_>) -> Result<Out> {
    match op {
        Op::Put(item, timeout) => ring_put(q, item, deadline(timeout), caller).map(|()| Out::Unit),
        Op::PutMany(items) => {
            for item in items {
                ring_put(q, item, None, caller)?;
            }
            Ok(Out::Unit)
        }
        Op::Get(timeout) => {
            let item = ring_get(q, deadline(timeout), caller)?;
            let Some(writer) = (caller.writer)() else {
                return Ok(Out::Item(Some(item)));
            };
            // Answer through the socket with a deadline: a client that
            // does not take the answer whole never saw it, so the item
            // goes back into the queue (at its end) for the next getter.
            let reply: std::result::Result<Out, WireError> = Ok(Out::Item(Some(item)));
            let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
            if w.send_timeout(&reply, HANDOFF_TIMEOUT).is_ok() {
                return Ok(Out::Handed);
            }
            let _ = rustix::net::shutdown(&*w, rustix::net::Shutdown::Both);
            drop(w);
            let Ok(Out::Item(Some(mut item))) = reply else {
                unreachable!("built above")
            };
            // Put back, waiting for room as long as it takes (nobody else
            // waits on this thread: its client is gone).
            loop {
                match q.put_timeout(item, POLL) {
                    Ok(()) => break,
                    Err(PutError::Timeout(back) | PutError::Full(back)) => item = back,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(Error::simple(ErrorKind::Closed, "the client left"))
        }
        Op::Qsize => Ok(Out::Count(q.qsize() as u64)),
        Op::Abandoned => Ok(Out::Items(Vec::new())),
        op => Err(wrong(kind, &op)),
    }
}

/// How long a blocked ring operation may wait before its next look at its
/// client: [`POLL`], or less before `deadline`.
fn slice(deadline: Option<Instant>) -> Duration {
    deadline.map_or(POLL, |d| {
        d.saturating_duration_since(Instant::now()).min(POLL)
    })
}

fn ring_put(
    q: &RingQueue,
    mut item: Bytes,
    deadline: Option<Instant>,
    caller: &mut Caller<'_>,
) -> Result<()> {
    loop {
        match q.put_timeout(item, slice(deadline)) {
            Ok(()) => return Ok(()),
            Err(PutError::Timeout(back) | PutError::Full(back)) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Error::timeout("the managed queue is full"));
                }
                if (caller.gone)() {
                    return Err(Error::simple(ErrorKind::Closed, "the client left"));
                }
                item = back;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn ring_get(q: &RingQueue, deadline: Option<Instant>, caller: &mut Caller<'_>) -> Result<Bytes> {
    loop {
        match q.get_timeout(slice(deadline)) {
            Ok(item) => return Ok(item),
            Err(GetError::Timeout | GetError::Empty) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Error::timeout("the managed queue is empty"));
                }
                if (caller.gone)() {
                    return Err(Error::simple(ErrorKind::Closed, "the client left"));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl Registry {
    /// The ring of plain queue `id`, for a client on this host to map.
    pub(crate) fn ring_of(&self, id: u64) -> Result<RingQueue> {
        match &*self.get(id)?.lock() {
            State::Ring(q) => Ok(q.clone()),
            _ => Err(Error::invalid(format!(
                "managed object #{id} is not a plain queue"
            ))),
        }
    }

    fn get(&self, id: u64) -> Result<Arc<Object>> {
        self.objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::invalid(format!("no managed object #{id} on this server")))
    }

    /// Makes an object (or, with a name, finds the one of that name).
    pub(crate) fn create(&self, how: Create, name: Option<String>) -> Result<Out> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let (kind, state) = match how {
            Create::Map => (Kind::Map, State::Map(OrderedMap::default())),
            Create::Namespace => (Kind::Namespace, State::Map(OrderedMap::default())),
            Create::List => (Kind::List, State::List(Vec::new())),
            Create::Value(v) => (Kind::Value, State::Value(v)),
            Create::Lock { reentrant } => (
                if reentrant { Kind::RLock } else { Kind::Lock },
                lock_state(reentrant),
            ),
            Create::Condition => (Kind::Condition, lock_state(true)),
            Create::Array(items) => (Kind::Array, State::List(items)),
            Create::Custom(type_name, init) => {
                let Some(ty) = custom::lookup(&type_name) else {
                    return Err(Error::invalid(format!(
                        "the manager server's program registers no shared type {type_name:?} \
                         (declare it with brood::shared_object! there)"
                    )));
                };
                let object = (ty.make)(&init)?;
                (Kind::Custom, State::Custom { object, ty })
            }
            Create::Event => (Kind::Event, State::Event(false)),
            Create::Semaphore { value, bounded } => (
                Kind::Semaphore,
                State::Semaphore {
                    value,
                    bound: bounded.then_some(value),
                },
            ),
            Create::Queue {
                maxsize,
                joinable: true,
            } => (
                Kind::JoinableQueue,
                State::Queue(QueueState {
                    items: VecDeque::new(),
                    maxsize,
                    unfinished: 0,
                    taken: HashMap::new(),
                    abandoned: Vec::new(),
                }),
            ),
            Create::Queue {
                maxsize,
                joinable: false,
            } => {
                let options = crate::queue::Options::new()
                    .maxsize(usize::try_from(maxsize).unwrap_or(usize::MAX));
                (Kind::Queue, State::Ring(RingQueue::with_options(options)?))
            }
            Create::Barrier { parties } => {
                if parties == 0 {
                    return Err(Error::invalid("a barrier needs at least one party"));
                }
                (
                    Kind::Barrier,
                    State::Barrier {
                        parties,
                        count: 0,
                        generation: 0,
                        broken: false,
                    },
                )
            }
        };
        if let Some(name) = &name
            && let Some(&id) = names.get(name)
        {
            let found = self.get(id)?;
            let existing = found.kind;
            if let (State::Custom { ty: theirs, .. }, State::Custom { ty: ours, .. }) =
                (&*found.lock(), &state)
                && theirs.name != ours.name
            {
                return Err(Error::invalid(format!(
                    "the managed object {name:?} is a {}, not a {}",
                    theirs.name, ours.name
                )));
            }
            if existing != kind {
                return Err(Error::invalid(format!(
                    "the managed object {name:?} is a {existing:?}, not a {kind:?}"
                )));
            }
            return Ok(Out::Created(id, kind));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Arc::new(Object {
                    kind,
                    state: Mutex::new(state),
                    changed: Condvar::new(),
                    waiters: AtomicUsize::new(0),
                    item: Condvar::new(),
                    item_waiters: AtomicUsize::new(0),
                }),
            );
        if let Some(name) = name {
            names.insert(name, id);
        }
        Ok(Out::Created(id, kind))
    }

    fn lease(&self, session: u64, id: u64) {
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(session)
            .or_default()
            .insert(id);
    }

    /// A session ended: release its locks, move the queue items it took
    /// (and did not finish) to their queue's abandoned list.
    pub(crate) fn end_session(&self, session: u64) {
        let ids = self
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&session)
            .unwrap_or_default();
        for id in ids {
            let Ok(obj) = self.get(id) else { continue };
            let mut state = obj.lock();
            match &mut *state {
                State::Lock { holder, count, .. } if holder.is_some_and(|(s, _)| s == session) => {
                    *holder = None;
                    *count = 0;
                }
                State::Queue(q) => {
                    if let Some(taken) = q.taken.remove(&session) {
                        q.unfinished = q.unfinished.saturating_sub(taken.len() as u64);
                        q.abandoned.extend(taken);
                    }
                }
                _ => {}
            }
            drop(state);
            obj.notify();
        }
    }

    /// Runs one operation on object `id`.
    pub(crate) fn apply(&self, id: u64, op: Op, caller: &mut Caller<'_>) -> Result<Out> {
        let obj = self.get(id)?;
        let out = self.apply_to(&obj, id, op, caller);
        obj.notify();
        out
    }

    /// A `get` that waits on the item condition variable (joinable
    /// queues, whose taken items are leased to the getter's session).
    fn get_waiting<'a>(
        &self,
        obj: &'a Object,
        st: MutexGuard<'a, State>,
        id: u64,
        timeout: Micros,
        caller: &mut Caller<'_>,
    ) -> Result<Out> {
        let got = obj.wait_for_item(st, deadline(timeout), caller)?;
        let Some(mut st) = got else {
            return Err(Error::timeout("the managed queue is empty"));
        };
        let State::Queue(q) = &mut *st else {
            unreachable!("the state of a queue is a queue")
        };
        let item = q.items.pop_front().expect("a non-empty queue");
        q.taken
            .entry(caller.session)
            .or_default()
            .push_back(item.clone());
        drop(st);
        self.lease(caller.session, id);
        Ok(Out::Item(Some(item)))
    }

    fn apply_to(&self, obj: &Object, id: u64, op: Op, caller: &mut Caller<'_>) -> Result<Out> {
        let kind = obj.kind;
        if kind == Kind::Array
            && matches!(
                op,
                Op::ListPush(_)
                    | Op::ListExtend(_)
                    | Op::ListInsert(..)
                    | Op::ListPop(_)
                    | Op::ListClear
            )
        {
            return Err(Error::invalid("a managed Array has a fixed length"));
        }
        if kind != Kind::Condition && matches!(op, Op::CondWait { .. } | Op::CondNotify { .. }) {
            return Err(wrong(kind, &op));
        }
        let mut st = obj.lock();
        match (&mut *st, op) {
            // ----- maps -----
            (State::Map(m), Op::MapGet(k)) => Ok(Out::Item(m.entries.get(&k).map(|e| e.1.clone()))),
            (State::Map(m), Op::MapInsert(k, v)) => Ok(Out::Item(m.insert(k, v))),
            (State::Map(m), Op::MapRemove(k)) => Ok(Out::Item(m.remove(&k))),
            (State::Map(m), Op::MapContains(k)) => Ok(Out::Bool(m.entries.contains_key(&k))),
            (State::Map(m), Op::MapLen) => Ok(Out::Count(m.entries.len() as u64)),
            (State::Map(m), Op::MapKeys) => Ok(Out::Items(m.order.values().cloned().collect())),
            (State::Map(m), Op::MapValues) => {
                Ok(Out::Items(m.items().map(|(_, v)| v.clone()).collect()))
            }
            (State::Map(m), Op::MapItems) => Ok(Out::Pairs(
                m.items().map(|(k, v)| (k.clone(), v.clone())).collect(),
            )),
            (State::Map(m), Op::MapClear) => {
                *m = OrderedMap::default();
                Ok(Out::Unit)
            }
            (State::Map(m), Op::MapUpdate(pairs)) => {
                for (k, v) in pairs {
                    m.insert(k, v);
                }
                Ok(Out::Unit)
            }
            // ----- lists -----
            (State::List(l), Op::ListPush(v)) => {
                l.push(v);
                Ok(Out::Unit)
            }
            (State::List(l), Op::ListExtend(vs)) => {
                l.extend(vs);
                Ok(Out::Unit)
            }
            (State::List(l), Op::ListGet(i)) => Ok(Out::Item(Some(l[index(i, l.len())?].clone()))),
            (State::List(l), Op::ListSet(i, v)) => {
                let i = index(i, l.len())?;
                l[i] = v;
                Ok(Out::Unit)
            }
            (State::List(l), Op::ListInsert(i, v)) => {
                // Python's list.insert clamps the index.
                let len = l.len() as i64;
                let at = if i < 0 { (i + len).max(0) } else { i.min(len) };
                l.insert(at as usize, v);
                Ok(Out::Unit)
            }
            (State::List(l), Op::ListPop(i)) => {
                if l.is_empty() {
                    return Ok(Out::Item(None));
                }
                let i = index(i.unwrap_or(-1), l.len())?;
                Ok(Out::Item(Some(l.remove(i))))
            }
            (State::List(l), Op::ListLen) => Ok(Out::Count(l.len() as u64)),
            (State::List(l), Op::ListItems) => Ok(Out::Items(l.clone())),
            (State::List(l), Op::ListClear) => {
                l.clear();
                Ok(Out::Unit)
            }
            // ----- values -----
            (State::Value(v), Op::ValueGet) => Ok(Out::Item(Some(v.clone()))),
            (State::Value(v), Op::ValueSet(new)) => {
                *v = new;
                Ok(Out::Unit)
            }
            // ----- locks -----
            (State::Lock { .. }, Op::Acquire { thread, timeout }) => {
                let me = (caller.session, thread);
                let got = obj.wait_until(st, deadline(timeout), caller, |s| match s {
                    State::Lock {
                        reentrant,
                        holder,
                        count,
                        ..
                    } => match holder {
                        None => {
                            *holder = Some(me);
                            *count = 1;
                            true
                        }
                        Some(h) if *reentrant && *h == me => {
                            *count += 1;
                            true
                        }
                        Some(_) => false,
                    },
                    _ => false,
                });
                match got {
                    Ok(Some(_)) => {
                        self.lease(caller.session, id);
                        Ok(Out::Bool(true))
                    }
                    Ok(None) => Ok(Out::Bool(false)),
                    Err(e) => Err(e),
                }
            }
            (
                State::Lock {
                    reentrant,
                    holder,
                    count,
                    ..
                },
                Op::Release { thread },
            ) => {
                match holder {
                    None => {
                        return Err(Error::invalid("release of an unlocked lock"));
                    }
                    Some(h) if *reentrant && *h != (caller.session, thread) => {
                        return Err(Error::invalid("cannot release an RLock held by another"));
                    }
                    Some(_) => {}
                }
                *count -= 1;
                if *count == 0 {
                    *holder = None;
                }
                Ok(Out::Unit)
            }
            (State::Lock { holder, .. }, Op::Locked) => Ok(Out::Bool(holder.is_some())),
            (State::Lock { .. }, Op::CondWait { thread, timeout }) => {
                let me = (caller.session, thread);
                let State::Lock {
                    holder,
                    count,
                    waiters,
                    tickets,
                    ..
                } = &mut *st
                else {
                    unreachable!("matched a lock")
                };
                if *holder != Some(me) {
                    return Err(Error::invalid("cannot wait on an un-acquired condition"));
                }
                // Release fully, queue a ticket, wait for it to be notified.
                let saved = *count;
                *holder = None;
                *count = 0;
                *tickets += 1;
                let ticket = *tickets;
                waiters.push_back(ticket);
                obj.notify();
                let woke = obj.wait_until(
                    st,
                    deadline(timeout),
                    caller,
                    |s| matches!(s, State::Lock { notified, .. } if notified.contains(&ticket)),
                );
                let (mut st, notified) = match woke {
                    Ok(Some(st)) => (st, true),
                    Ok(None) => (obj.lock(), false),
                    Err(e) => {
                        forget_ticket(&mut obj.lock(), ticket);
                        return Err(e);
                    }
                };
                forget_ticket(&mut st, ticket);
                // Take the lock back, as many times as it was held.
                obj.wait_until(st, None, caller, |s| match s {
                    State::Lock { holder, count, .. } if holder.is_none() => {
                        *holder = Some(me);
                        *count = saved;
                        true
                    }
                    _ => false,
                })?;
                self.lease(caller.session, id);
                Ok(Out::Bool(notified))
            }
            (
                State::Lock {
                    holder,
                    waiters,
                    notified,
                    ..
                },
                Op::CondNotify { thread, n },
            ) => {
                if *holder != Some((caller.session, thread)) {
                    return Err(Error::invalid("cannot notify on an un-acquired condition"));
                }
                for _ in 0..n {
                    let Some(ticket) = waiters.pop_front() else {
                        break;
                    };
                    notified.insert(ticket);
                }
                Ok(Out::Unit)
            }
            // ----- events -----
            (State::Event(flag), Op::EventSet) => {
                *flag = true;
                Ok(Out::Unit)
            }
            (State::Event(flag), Op::EventClear) => {
                *flag = false;
                Ok(Out::Unit)
            }
            (State::Event(flag), Op::EventIsSet) => Ok(Out::Bool(*flag)),
            (State::Event(_), Op::EventWait(timeout)) => {
                let got = obj.wait_until(st, deadline(timeout), caller, |s| {
                    matches!(s, State::Event(true))
                })?;
                Ok(Out::Bool(got.is_some()))
            }
            // ----- semaphores -----
            (State::Semaphore { .. }, Op::SemAcquire(timeout)) => {
                let got = obj.wait_until(st, deadline(timeout), caller, |s| match s {
                    State::Semaphore { value, .. } if *value > 0 => {
                        *value -= 1;
                        true
                    }
                    _ => false,
                })?;
                Ok(Out::Bool(got.is_some()))
            }
            (State::Semaphore { value, bound }, Op::SemRelease) => {
                if bound.is_some_and(|b| *value >= b) {
                    return Err(Error::invalid(
                        "a bounded semaphore was released too many times",
                    ));
                }
                *value += 1;
                Ok(Out::Unit)
            }
            (State::Semaphore { value, .. }, Op::SemValue) => Ok(Out::Count(*value)),
            // ----- plain queues: their ring, outside the object's lock -----
            (State::Ring(q), op) => {
                let q = q.clone();
                drop(st);
                ring_op(&q, kind, op, caller)
            }
            // ----- joinable queues -----
            (State::Queue(_), Op::Put(item, timeout)) => {
                let got = obj.wait_until(st, deadline(timeout), caller, |s| match s {
                    State::Queue(q) => q.maxsize == 0 || (q.items.len() as u64) < q.maxsize,
                    _ => false,
                })?;
                let Some(mut st) = got else {
                    return Err(Error::timeout("the managed queue is full"));
                };
                if let State::Queue(q) = &mut *st {
                    q.items.push_back(item);
                    q.unfinished += 1;
                }
                obj.notify_item();
                Ok(Out::Unit)
            }
            (State::Queue(_), Op::PutMany(items)) => {
                let mut st = st;
                for item in items {
                    st = obj
                        .wait_until(st, None, caller, |s| match s {
                            State::Queue(q) => q.maxsize == 0 || (q.items.len() as u64) < q.maxsize,
                            _ => false,
                        })?
                        .expect("no deadline");
                    if let State::Queue(q) = &mut *st {
                        q.items.push_back(item);
                        q.unfinished += 1;
                    }
                    // Getters may take items while a bounded queue fills.
                    obj.notify();
                    obj.notify_item();
                }
                Ok(Out::Unit)
            }
            (State::Queue(_), Op::Get(timeout)) => self.get_waiting(obj, st, id, timeout, caller),
            (State::Queue(q), Op::Qsize) => Ok(Out::Count(q.items.len() as u64)),
            (State::Queue(q), Op::TaskDone) => {
                if q.unfinished == 0 {
                    return Err(Error::invalid("task_done() called too many times"));
                }
                q.unfinished -= 1;
                if let Some(taken) = q.taken.get_mut(&caller.session) {
                    taken.pop_front();
                }
                Ok(Out::Unit)
            }
            (State::Queue(_), Op::Join(timeout)) => {
                let got = obj.wait_until(st, deadline(timeout), caller, |s| match s {
                    State::Queue(q) => q.unfinished == 0,
                    _ => false,
                })?;
                Ok(Out::Bool(got.is_some()))
            }
            (State::Queue(q), Op::Abandoned) => Ok(Out::Items(q.abandoned.clone())),
            // ----- barriers -----
            (
                State::Barrier {
                    parties,
                    count,
                    generation,
                    broken,
                },
                Op::BarrierWait(timeout),
            ) => {
                if *broken {
                    return Err(broken_barrier());
                }
                let me = *count;
                let my_generation = *generation;
                *count += 1;
                if *count == *parties {
                    *count = 0;
                    *generation += 1;
                    return Ok(Out::Count(me));
                }
                let left = obj.wait_until(st, deadline(timeout), caller, |s| match s {
                    State::Barrier {
                        generation, broken, ..
                    } => *generation != my_generation || *broken,
                    _ => false,
                });
                let mut st = match left {
                    Ok(Some(st)) => st,
                    // Timed out or left: the barrier breaks for everyone.
                    _ => {
                        let mut st = obj.lock();
                        if let State::Barrier { broken, .. } = &mut *st {
                            *broken = true;
                        }
                        return Err(broken_barrier());
                    }
                };
                match &mut *st {
                    State::Barrier {
                        generation, broken, ..
                    } if *generation == my_generation + 1 && !*broken => Ok(Out::Count(me)),
                    _ => Err(broken_barrier()),
                }
            }
            (State::Barrier { broken, .. }, Op::BarrierAbort) => {
                *broken = true;
                Ok(Out::Unit)
            }
            (
                State::Barrier {
                    count,
                    generation,
                    broken,
                    ..
                },
                Op::BarrierReset,
            ) => {
                // A reset moves two generations on: waiters of the round
                // it cut short see `generation != theirs + 1` and break out.
                *count = 0;
                *generation += 2;
                *broken = false;
                Ok(Out::Unit)
            }
            (
                State::Barrier {
                    parties,
                    count,
                    broken,
                    ..
                },
                Op::BarrierState,
            ) => Ok(Out::Items(vec![
                Bytes::from(parties.to_le_bytes().to_vec()),
                Bytes::from(count.to_le_bytes().to_vec()),
                Bytes::from(vec![u8::from(*broken)]),
            ])),
            // ----- custom objects -----
            (State::Custom { object, ty }, Op::Custom(method, args)) => {
                let call = ty.call;
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    call(&mut **object, &method, &args)
                }));
                match run {
                    Ok(out) => out.map(|bytes| Out::Item(Some(Bytes::from(bytes)))),
                    Err(_) => Err(Error::simple(
                        ErrorKind::Panicked,
                        format!("the shared {}'s method {method} panicked", ty.name),
                    )),
                }
            }
            (_, op) => Err(wrong(kind, &op)),
        }
    }
}

/// Drops a condition waiter's ticket (notified or not).
fn forget_ticket(state: &mut State, ticket: u64) {
    if let State::Lock {
        waiters, notified, ..
    } = state
    {
        waiters.retain(|t| *t != ticket);
        notified.remove(&ticket);
    }
}

fn broken_barrier() -> Error {
    Error::simple(ErrorKind::BrokenBarrier, "the managed barrier is broken")
}
