//! Queues across processes: Queue, SimpleQueue and JoinableQueue under
//! every start method; many producers and consumers (every message exactly
//! once, order per producer kept); chaos (producers and consumers
//! SIGKILLed at random while the others go on); Python's semantics case by
//! case; a child that puts 10 MiB and is joined before anyone reads; and
//! nothing left behind (no /dev/shm entry, zombie or fd).

#[macro_use]
mod common;

use common::builder;

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use brood::queue::{GetError, Options, PutError};
use brood::shm::SharedMemory;
use brood::{JoinableQueue, Process, Queue, SimpleQueue, StartMethod};
use serde::{Deserialize, Serialize};

const LONG: Duration = Duration::from_secs(60);

/// A checksum of one message's identity (what a consumer verifies).
fn check(producer: u32, seq: u32) -> u64 {
    let mut x = (u64::from(producer) << 32 | u64::from(seq)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    x.wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

// ---------------------------------------------------------------------------
// Many producers, many consumers.

/// Messages per producer in the 4 x 4 test (the figure; about
/// 4 s per start method in the debug build on 2 CPUs).
const PER_PRODUCER: u32 = 100_000;

type Msg = (u32, u32, u64);

fn produce((q, p, n): (Queue<Msg>, u32, u32)) {
    for seq in 0..n {
        q.put((p, seq, check(p, seq))).unwrap();
    }
}

/// Takes until the queue is closed and drained; checks each message's
/// checksum and that each producer's messages come in order; returns the
/// ids taken.
fn consume(q: Queue<Msg>) -> Vec<u64> {
    let mut last = std::collections::HashMap::<u32, u32>::new();
    let mut ids = Vec::new();
    loop {
        match q.get() {
            Ok((p, seq, sum)) => {
                assert_eq!(sum, check(p, seq), "message ({p}, {seq}) corrupted");
                if let Some(prev) = last.insert(p, seq) {
                    assert!(seq > prev, "producer {p}: {seq} after {prev}");
                }
                ids.push(u64::from(p) << 32 | u64::from(seq));
            }
            Err(GetError::Closed) => return ids,
            Err(e) => panic!("get failed: {e}"),
        }
    }
}

fn four_by_four_every_message_once_in_order(m: StartMethod) {
    let q = Queue::<Msg>::with_options(Options::new().max_bytes(1 << 20)).unwrap();
    let mut consumers: Vec<Process<Vec<u64>>> = (0..4)
        .map(|_| builder(m).target_with(consume, q.clone()))
        .collect();
    let mut producers: Vec<Process<()>> = (0..4)
        .map(|p| builder(m).target_with(produce, (q.clone(), p, PER_PRODUCER)))
        .collect();
    for c in &mut consumers {
        c.start().unwrap();
    }
    for p in &mut producers {
        p.start().unwrap();
    }
    for p in &mut producers {
        p.join_timeout(LONG).unwrap();
    }
    q.close();
    let mut seen = vec![false; 4 * PER_PRODUCER as usize];
    let mut total = 0;
    for c in &mut consumers {
        for id in c.join_timeout(LONG).unwrap() {
            let (p, seq) = ((id >> 32) as usize, (id & 0xffff_ffff) as usize);
            let slot = &mut seen[p * PER_PRODUCER as usize + seq];
            assert!(!*slot, "message ({p}, {seq}) delivered twice");
            *slot = true;
            total += 1;
        }
    }
    assert_eq!(total, 4 * PER_PRODUCER as usize, "messages lost");
    assert!(q.is_empty());
    common::assert_no_zombie_children();
}

// ---------------------------------------------------------------------------
// Chaos: SIGKILL producers and consumers at random while the others run.

const GENS: usize = 256;
const SEQS: usize = 1 << 15;
/// Layout of the shared log: per (generation, seq) a "put returned" byte
/// and a "delivered" counter; then a stop byte for producers and one for
/// consumers.
const PUT_AT: usize = 0;
const GOT_AT: usize = GENS * SEQS;
const STOP_PRODUCERS: usize = 2 * GENS * SEQS;
const STOP_CONSUMERS: usize = STOP_PRODUCERS + 1;

fn byte(log: &SharedMemory, at: usize) -> &AtomicU8 {
    assert!(at < log.len());
    // SAFETY: `at` is inside the mapping, which lives as long as `log`;
    // every process touches these bytes only through atomics.
    unsafe { &*log.as_ptr().add(at).cast::<AtomicU8>() }
}

fn chaos_producer(q: Queue<(u32, u32)>, log: SharedMemory, generation: u32) {
    for seq in 0..SEQS as u32 {
        if byte(&log, STOP_PRODUCERS).load(Ordering::SeqCst) != 0 {
            return;
        }
        q.put((generation, seq)).unwrap();
        byte(&log, PUT_AT + generation as usize * SEQS + seq as usize).store(1, Ordering::SeqCst);
    }
}

fn chaos_consumer(q: Queue<(u32, u32)>, log: SharedMemory) {
    loop {
        match q.get_timeout(Duration::from_millis(20)) {
            Ok((g, seq)) => {
                assert!((g as usize) < GENS && (seq as usize) < SEQS);
                byte(&log, GOT_AT + g as usize * SEQS + seq as usize)
                    .fetch_add(1, Ordering::SeqCst);
            }
            Err(GetError::Timeout) => {
                if byte(&log, STOP_CONSUMERS).load(Ordering::SeqCst) != 0 {
                    return;
                }
            }
            Err(e) => panic!("consumer: {e}"),
        }
    }
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn chaos_sigkill_producers_and_consumers_at_random() {
    common::allow_fork();
    let started = Instant::now();
    // A small ring, so records wrap and producers wait for room too.
    let q = Queue::<(u32, u32)>::with_options(Options::new().max_bytes(1 << 14)).unwrap();
    let log = SharedMemory::new(2 * GENS * SEQS + 2).unwrap();
    let mut next_gen = 0u32;
    let spawn_producer = |generation: &mut u32| {
        let (q, log, g) = (q.clone(), log.clone(), *generation);
        *generation += 1;
        let mut p = Process::fork(move || chaos_producer(q, log, g));
        p.start().unwrap();
        p
    };
    let spawn_consumer = || {
        let (q, log) = (q.clone(), log.clone());
        let mut p = Process::fork(move || chaos_consumer(q, log));
        p.start().unwrap();
        p
    };
    let mut producers: Vec<Process<()>> = (0..2).map(|_| spawn_producer(&mut next_gen)).collect();
    let mut consumers: Vec<Process<()>> = (0..2).map(|_| spawn_consumer()).collect();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id()));
    let mut consumer_kills = 0;
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(1 + rng.below(4)));
        let victim = rng.below(4) as usize;
        if victim < 2 {
            let p = &mut producers[victim];
            let _ = p.kill();
            let _ = p.join_timeout(LONG);
            producers[victim] = spawn_producer(&mut next_gen);
        } else {
            let c = &mut consumers[victim - 2];
            let _ = c.kill();
            let _ = c.join_timeout(LONG);
            consumer_kills += 1;
            consumers[victim - 2] = spawn_consumer();
        }
        assert!((next_gen as usize) < GENS);
    }
    // Stop the producers, let the consumers drain, stop them.
    byte(&log, STOP_PRODUCERS).store(1, Ordering::SeqCst);
    for p in &mut producers {
        p.join_timeout(LONG).unwrap();
    }
    let deadline = Instant::now() + LONG;
    while !q.is_empty() {
        assert!(Instant::now() < deadline, "consumers stopped draining");
        std::thread::sleep(Duration::from_millis(5));
    }
    byte(&log, STOP_CONSUMERS).store(1, Ordering::SeqCst);
    for c in &mut consumers {
        c.join_timeout(LONG).unwrap();
    }
    // The queue is still usable.
    q.put((7, 7)).unwrap();
    assert_eq!(q.get_timeout(LONG), Ok((7, 7)));
    assert!(q.try_get().is_err());

    let (mut delivered, mut put_not_delivered) = (0usize, 0usize);
    for i in 0..GENS * SEQS {
        let got = byte(&log, GOT_AT + i).load(Ordering::SeqCst);
        let put = byte(&log, PUT_AT + i).load(Ordering::SeqCst);
        assert!(got <= 1, "message {i} delivered {got} times");
        delivered += got as usize;
        if put == 1 && got == 0 {
            put_not_delivered += 1;
        }
    }
    // Each killed consumer may have taken one message it never recorded.
    assert!(
        put_not_delivered <= consumer_kills,
        "{put_not_delivered} messages put and never delivered, {consumer_kills} consumers killed"
    );
    assert!(delivered > 1000, "too little got through: {delivered}");
    eprintln!(
        "chaos: {delivered} delivered, {put_not_delivered} lost with {consumer_kills} killed \
         consumers, {next_gen} producer generations, {:?}",
        started.elapsed()
    );
    common::assert_no_zombie_children();
}

#[test]
fn a_producer_killed_mid_put_blocks_no_one() {
    common::allow_fork();
    // A 4 KiB ring: the child's 1 MB message goes in pieces and its put
    // holds the producers' lock while it waits for a reader.
    let q = Queue::<serde_bytes::ByteBuf>::with_options(Options::new().max_bytes(4096)).unwrap();
    let child_q = q.clone();
    let mut child = Process::fork(move || {
        child_q
            .put(serde_bytes::ByteBuf::from(vec![1u8; 1 << 20]))
            .unwrap()
    });
    child.start().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.is_alive(),
        "the put should still be waiting for a reader"
    );
    child.kill().unwrap();
    assert!(child.join_timeout(LONG).is_err());
    // A consumer drops the half-put message (never delivered in part)...
    let t = Instant::now();
    assert_eq!(
        q.get_timeout(Duration::from_millis(300)),
        Err(GetError::Timeout)
    );
    // ... and another producer gets in at once.
    q.put_timeout(
        serde_bytes::ByteBuf::from(b"after".to_vec()),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap().as_ref(), b"after");
    assert!(q.try_get().is_err());
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_consumer_killed_mid_get_blocks_no_one() {
    common::allow_fork();
    let q = Queue::<serde_bytes::ByteBuf>::with_options(Options::new().max_bytes(4096)).unwrap();
    let (qc, qp) = (q.clone(), q.clone());
    // The consumer takes the first pieces of a 1 MB message, then dies.
    let mut consumer = Process::fork(move || {
        let _ = qc.get();
    });
    consumer.start().unwrap();
    let mut producer = Process::fork(move || {
        qp.put(serde_bytes::ByteBuf::from(vec![2u8; 1 << 20]))
            .unwrap();
    });
    producer.start().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    consumer.kill().unwrap();
    let _ = consumer.join_timeout(LONG);
    // The next consumer skips the rest of the pieces the dead one had
    // started on (or, if it had not started, takes the whole message), so
    // the producer's put completes.
    match q.get_timeout(Duration::from_millis(500)) {
        Err(GetError::Timeout) => {}
        Ok(whole) => assert!(whole.len() == 1 << 20 && whole.iter().all(|&b| b == 2)),
        Err(e) => panic!("{e}"),
    }
    producer.join_timeout(LONG).unwrap();
    q.put(serde_bytes::ByteBuf::from(b"next".to_vec())).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap().as_ref(), b"next");
    assert!(q.try_get().is_err());
}

// ---------------------------------------------------------------------------
// Python's semantics, case by case.

#[test]
fn empty_and_full_with_and_without_timeouts() {
    let q = Queue::bounded(2).unwrap();
    assert_eq!(q.try_get(), Err(GetError::Empty));
    assert_eq!(q.get_with(false, None), Err(GetError::Empty));
    let t = Instant::now();
    assert_eq!(
        q.get_timeout(Duration::from_millis(50)),
        Err(GetError::Timeout)
    );
    assert_eq!(
        q.get_with(true, Some(Duration::from_millis(50))),
        Err(GetError::Empty)
    );
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    q.put(1).unwrap();
    q.put_timeout(2, Duration::from_secs(1)).unwrap();
    assert!(q.is_full());
    assert_eq!(q.try_put(3), Err(PutError::Full(3)));
    assert_eq!(q.put_with(3, false, None), Err(PutError::Full(3)));
    let t = Instant::now();
    assert_eq!(
        q.put_timeout(3, Duration::from_millis(50)),
        Err(PutError::Timeout(3))
    );
    assert_eq!(
        q.put_with(3, true, Some(Duration::from_millis(50))),
        Err(PutError::Full(3))
    );
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(q.get(), Ok(1));
    assert_eq!(q.get(), Ok(2));
    assert!(q.is_empty());
}

#[test]
fn zero_timeouts_and_block_false_never_sleep() {
    let empty = Queue::<u8>::new().unwrap();
    let full = Queue::bounded(1).unwrap();
    full.put(0u8).unwrap();
    let hour = Some(Duration::from_secs(3600));
    let t = Instant::now();
    for _ in 0..1000 {
        assert_eq!(empty.get_timeout(Duration::ZERO), Err(GetError::Timeout));
        assert_eq!(
            empty.get_with(true, Some(Duration::ZERO)),
            Err(GetError::Empty)
        );
        assert_eq!(empty.get_with(false, hour), Err(GetError::Empty));
        assert_eq!(
            full.put_timeout(1, Duration::ZERO),
            Err(PutError::Timeout(1))
        );
        assert_eq!(full.put_with(1, false, hour), Err(PutError::Full(1)));
    }
    // 5000 polls: milliseconds, never a sleep of any length.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn duration_max_means_forever_and_never_panics() {
    let q = Queue::new().unwrap();
    q.put_timeout(5u32, Duration::MAX).unwrap();
    assert_eq!(q.get_timeout(Duration::MAX), Ok(5));
    let q2 = q.clone();
    let waiter = std::thread::spawn(move || q2.get_timeout(Duration::MAX));
    std::thread::sleep(Duration::from_millis(20));
    q.put(6).unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(6));
    assert_eq!(q.put_with(7, true, Some(Duration::MAX)), Ok(()));
    assert_eq!(q.get_with(true, Some(Duration::MAX)), Ok(7));
}

#[test]
fn fifo_and_qsize_exact_when_quiet() {
    common::allow_fork();
    let q = Queue::<u32>::new().unwrap();
    let mut children: Vec<Process<()>> = (0..2u32)
        .map(|c| {
            let q = q.clone();
            Process::fork(move || {
                for i in 0..500 {
                    q.put(c * 1000 + i).unwrap();
                }
            })
        })
        .collect();
    for c in &mut children {
        c.start().unwrap();
    }
    for c in &mut children {
        c.join_timeout(LONG).unwrap();
    }
    assert_eq!(q.qsize(), 1000);
    let mut last = [None::<u32>; 2];
    for _ in 0..400 {
        let v = q.get().unwrap();
        let c = (v / 1000) as usize;
        assert!(last[c] < Some(v));
        last[c] = Some(v);
    }
    assert_eq!(q.qsize(), 600);
    assert!(!q.is_empty() && !q.is_full());
}

fn a_bounded_queue_holds_at_most_maxsize(m: StartMethod) {
    // The child puts 200 messages into Queue(3): its puts wait for the
    // parent's gets, and the queue never holds more than 3.
    let q = Queue::<u32>::bounded(3).unwrap();
    let mut child = builder(m).target_with(
        |q: Queue<u32>| {
            for i in 0..200 {
                q.put(i).unwrap();
            }
        },
        q.clone(),
    );
    child.start().unwrap();
    let mut most = 0;
    for i in 0..200 {
        most = most.max(q.qsize());
        assert!(q.qsize() <= 3 && (q.qsize() < 3 || q.is_full()));
        assert_eq!(q.get_timeout(LONG), Ok(i));
    }
    child.join_timeout(LONG).unwrap();
    assert!(most <= 3, "{most}");
    assert!(q.is_empty() && !q.is_full());
}

fn close_in_child(m: StartMethod) {
    // The child closes: the parent's puts fail, its gets drain, then Closed.
    let q = Queue::new().unwrap();
    q.put(1u8).unwrap();
    let mut child = builder(m).target_with(|q: Queue<u8>| q.close(), q.clone());
    child.start().unwrap();
    child.join_timeout(LONG).unwrap();
    assert!(q.is_closed());
    assert_eq!(q.put(2), Err(PutError::Closed(2)));
    assert_eq!(q.get(), Ok(1));
    assert_eq!(q.get(), Err(GetError::Closed));
    assert_eq!(q.try_get(), Err(GetError::Closed));
}

fn close_wakes_a_blocked_child(m: StartMethod) {
    // The parent closes: a child blocked in get, and one blocked in put on a
    // full queue, both wake with Closed.
    let empty = Queue::<u8>::new().unwrap();
    let full = Queue::<u8>::bounded(1).unwrap();
    full.put(0).unwrap();
    let mut getter = builder(m).target_with(
        |q: Queue<u8>| q.get().map_err(|e| e.to_string()),
        empty.clone(),
    );
    let mut putter = builder(m).target_with(
        |q: Queue<u8>| q.put(1).map_err(|e| e.to_string()),
        full.clone(),
    );
    getter.start().unwrap();
    putter.start().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    empty.close();
    full.close();
    assert_eq!(
        getter.join_timeout(LONG).unwrap(),
        Err("the queue is closed and empty".into())
    );
    assert_eq!(
        putter.join_timeout(LONG).unwrap(),
        Err("the queue is closed".into())
    );
}

#[test]
fn task_done_and_join_accounting() {
    common::allow_fork();
    let q = JoinableQueue::new().unwrap();
    assert!(q.task_done().is_err(), "nothing put: one too many");
    for i in 0..3u32 {
        q.put(i).unwrap();
    }
    assert_eq!(q.unfinished_tasks(), 3);
    assert!(!q.join_timeout(Duration::from_millis(20)));
    let worker_q = q.clone();
    let mut worker = Process::fork(move || {
        for _ in 0..3 {
            worker_q.get().unwrap();
            std::thread::sleep(Duration::from_millis(10));
            worker_q.task_done().unwrap();
        }
    });
    worker.start().unwrap();
    let t = Instant::now();
    q.join();
    assert!(t.elapsed() < LONG);
    assert_eq!(q.unfinished_tasks(), 0);
    worker.join_timeout(LONG).unwrap();
    let err = q.task_done().unwrap_err();
    assert_eq!(err.kind(), brood::ErrorKind::InvalidState);
    assert!(err.to_string().contains("too many"), "{err}");
    assert!(q.join_timeout(Duration::ZERO));
    // Taken but not done still counts (Python's semantics).
    q.put(9).unwrap();
    q.get().unwrap();
    assert_eq!(q.unfinished_tasks(), 1);
    assert!(!q.join_timeout(Duration::from_millis(10)));
}

#[test]
fn simple_queue_put_get_empty_close() {
    common::allow_fork();
    let q = SimpleQueue::new().unwrap();
    assert!(q.is_empty());
    let child_q = q.clone();
    let mut child = Process::fork(move || {
        for i in 0..10u16 {
            child_q.put(i).unwrap();
        }
    });
    child.start().unwrap();
    child.join_timeout(LONG).unwrap();
    for i in 0..10u16 {
        assert_eq!(q.get(), Ok(i));
    }
    assert!(q.is_empty());
    q.close();
    assert_eq!(q.put(1), Err(PutError::Closed(1)));
    assert_eq!(q.get(), Err(GetError::Closed));
}

// ---------------------------------------------------------------------------
// Bad input.

#[test]
fn a_value_that_cannot_be_encoded_is_refused_and_handed_back() {
    let q = Queue::<SharedMemory>::new().unwrap();
    let shm = SharedMemory::new(8).unwrap();
    match q.put(shm.clone()) {
        Err(PutError::Encode(back, message)) => {
            assert_eq!(back.len(), 8);
            assert!(message.contains("file descriptor"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(q.is_empty());
}

/// A value whose decoding fails for 13.
#[derive(Debug, PartialEq)]
struct Picky(u8);
impl Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}
impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            13 => Err(serde::de::Error::custom("unlucky")),
            n => Ok(Picky(n)),
        }
    }
}

#[test]
fn a_message_that_cannot_be_decoded_is_an_error_and_the_next_comes() {
    let q = Queue::new().unwrap();
    q.put(Picky(13)).unwrap();
    q.put(Picky(14)).unwrap();
    match q.get() {
        Err(GetError::Decode(m)) => assert!(m.contains("unlucky"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(q.get(), Ok(Picky(14)));
}

// ---------------------------------------------------------------------------
// Large messages, and how queues reach other processes.

fn ten_mib_child_joined_before_anyone_reads(m: StartMethod) {
    let q = Queue::<serde_bytes::ByteBuf>::new().unwrap();
    let mut child = builder(m).target_with(
        |q: Queue<serde_bytes::ByteBuf>| {
            let data: Vec<u8> = (0..10u32 << 20).map(|i| (i % 251) as u8).collect();
            q.put(serde_bytes::ByteBuf::from(data)).unwrap();
        },
        q.clone(),
    );
    child.start().unwrap();
    // Python's Queue would hang here: its feeder thread waits for a reader.
    child.join_timeout(LONG).unwrap();
    assert_eq!(q.qsize(), 1);
    let got = q.get_timeout(LONG).unwrap();
    assert_eq!(got.len(), 10 << 20);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
}

fn queues_cross_inside_a_value(m: StartMethod) {
    #[derive(Serialize, Deserialize)]
    struct Kit {
        jobs: JoinableQueue<String>,
        results: SimpleQueue<usize>,
        log: Queue<String>,
    }
    let kit = Kit {
        jobs: JoinableQueue::new().unwrap(),
        results: SimpleQueue::new().unwrap(),
        log: Queue::bounded(4).unwrap(),
    };
    kit.jobs.put("hello".into()).unwrap();
    kit.jobs.put("queues".into()).unwrap();
    let mut child = builder(m).target_with(
        |kit: Kit| {
            for _ in 0..2 {
                let job = kit.jobs.get().unwrap();
                kit.results.put(job.len()).unwrap();
                kit.log.put(format!("did {job}")).unwrap();
                kit.jobs.task_done().unwrap();
            }
        },
        Kit {
            jobs: kit.jobs.clone(),
            results: kit.results.clone(),
            log: kit.log.clone(),
        },
    );
    child.start().unwrap();
    assert!(kit.jobs.join_timeout(LONG));
    child.join_timeout(LONG).unwrap();
    assert_eq!((kit.results.get(), kit.results.get()), (Ok(5), Ok(6)));
    assert_eq!(kit.log.get().unwrap(), "did hello");
    assert_eq!(kit.log.get().unwrap(), "did queues");
}

fn a_queue_crosses_over_a_connection(m: StartMethod) {
    let (mut here, there) = brood::pipe(true).unwrap();
    let mut child = builder(m).target_with(
        |mut conn: brood::Connection| {
            let q: Queue<String> = Queue::recv_from(&mut conn).map_err(|e| e.to_string())?;
            let j: JoinableQueue<u8> =
                JoinableQueue::recv_from(&mut conn).map_err(|e| e.to_string())?;
            // Another type or kind is refused, never reinterpreted.
            let wrong = SimpleQueue::<u8>::recv_from(&mut conn).map(|_| ());
            q.put(format!("via a connection, wrong kind: {}", wrong.is_err()))
                .map_err(|e| e.to_string())?;
            j.get().map_err(|e| e.to_string())?;
            j.task_done().map_err(|e| e.to_string())
        },
        there,
    );
    child.start().unwrap();
    let q = Queue::<String>::new().unwrap();
    let j = JoinableQueue::<u8>::new().unwrap();
    j.put(1).unwrap();
    q.send_to(&mut here).unwrap();
    j.send_to(&mut here).unwrap();
    Queue::<u8>::new().unwrap().send_to(&mut here).unwrap();
    assert!(j.join_timeout(LONG));
    child.join_timeout(LONG).unwrap().unwrap();
    assert_eq!(q.get().unwrap(), "via a connection, wrong kind: true");
}

/// A queue inside any value sent with plain `Connection::send` (the fds a
/// value holds travel with it), received in a child.
fn a_queue_inside_a_value_crosses_with_send(m: StartMethod) {
    let (mut here, there) = brood::pipe(true).unwrap();
    let mut child = builder(m).target_with(
        |mut conn: brood::Connection| {
            let (q, n): (Queue<u32>, u32) = conn.recv().map_err(|e| e.to_string())?;
            q.put(n + 1).map_err(|e| e.to_string())
        },
        there,
    );
    child.start().unwrap();
    let q = Queue::<u32>::new().unwrap();
    here.send(&(q.clone(), 41u32)).unwrap();
    child.join_timeout(LONG).unwrap().unwrap();
    assert_eq!(q.get_timeout(LONG), Ok(42));
}

#[test]
fn a_forked_closure_captures_a_queue() {
    common::allow_fork();
    let q = Queue::new().unwrap();
    let mine = q.clone();
    let mut child = Process::fork(move || mine.put(String::from("from the closure")).unwrap());
    child.start().unwrap();
    child.join_timeout(LONG).unwrap();
    assert_eq!(q.get().unwrap(), "from the closure");
}

// ---------------------------------------------------------------------------
// Nothing left behind.

fn brood_shm_entries() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                // Pools of tests running in parallel publish status pages
                // (`brood-pool-*`, issue 13) that come and go meanwhile.
                .filter(|n| n.starts_with("brood") && !n.starts_with("brood-pool-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn queues_leave_no_shm_entry_zombie_or_fd() {
    common::allow_fork();
    let shm_before = brood_shm_entries();
    // Warm up (lazily opened fds) before counting.
    let warm = Queue::<u8>::new().unwrap();
    let mut p = Process::fork(move || warm.put(1).unwrap());
    p.start().unwrap();
    p.join_timeout(LONG).unwrap();
    let before = common::open_fds();
    for i in 0..50u32 {
        let q = Queue::<u32>::bounded(4).unwrap();
        let j = JoinableQueue::<u32>::new().unwrap();
        let s = SimpleQueue::<u32>::new().unwrap();
        let (q2, j2, s2) = (q.clone(), j.clone(), s.clone());
        let mut child = Process::fork(move || {
            q2.put(i).unwrap();
            j2.put(i).unwrap();
            s2.put(i).unwrap();
        });
        child.start().unwrap();
        child.join_timeout(LONG).unwrap();
        assert_eq!((q.get(), j.get(), s.get()), (Ok(i), Ok(i), Ok(i)));
    }
    assert_eq!(common::open_fds(), before, "fds leaked");
    assert_eq!(brood_shm_entries(), shm_before, "/dev/shm entries left");
    common::assert_no_zombie_children();
}

suite!(
    four_by_four_every_message_once_in_order,
    a_bounded_queue_holds_at_most_maxsize,
    close_in_child,
    close_wakes_a_blocked_child,
    ten_mib_child_joined_before_anyone_reads,
    queues_cross_inside_a_value,
    a_queue_crosses_over_a_connection,
    a_queue_inside_a_value_crosses_with_send,
);
