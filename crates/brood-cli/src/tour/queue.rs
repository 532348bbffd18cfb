//! Message queues: the reference's §7.2 example (`Queue(3)`, a request
//! process and a handle process), then two things brood's queues fix: a
//! child that put a large message can be joined before anyone reads it,
//! and a producer killed mid-run does not stop the others.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use brood::queue::{GetError, PutError};
use brood::{Process, Queue, StartMethod};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::kit::{self, BOUND, Guarded, explain, line, python};

/// The reference's example, verbatim (§7.2).
const PYTHON_7_2: &str = "\
from multiprocessing import Process, Queue
from time import sleep
from random import randint

#  创建消息队列
q = Queue(3)

# 请求进程
def request():
  for i in range(2):
    x = randint(0, 100)
    y = randint(0, 100)
    q.put((x, y))

# 处理进程
def handle():
  while True:
    sleep(1)
    try:
      x, y = q.get(timeout=2)
    except:
      break
    else:
      print(\"%d + %d = %d\" % (x, y, x + y))

p1 = Process(target=request)
p2 = Process(target=handle)
p1.start()
p2.start()
p1.join()
p2.join()
# 12 + 61 = 73
# 69 + 48 = 117";

const RUST_7_2: &str = "\
let q = Queue::<(u32, u32)>::bounded(3)?;

fn request(q: Queue<(u32, u32)>) {
    for _ in 0..2 {
        let (x, y) = (randint(0, 100), randint(0, 100));
        q.put((x, y)).unwrap();
    }
}

fn handle(q: Queue<(u32, u32)>) {
    loop {
        sleep(Duration::from_millis(200));
        match q.get_timeout(Duration::from_secs(2)) {
            Ok((x, y)) => println!(\"{x} + {y} = {}\", x + y),
            Err(_) => break, // empty for 2 s: done
        }
    }
}

let mut p1 = Process::with_args(request, q.clone());
let mut p2 = Process::with_args(handle, q.clone());
p1.start()?; p2.start()?;
p1.join()?; p2.join()?;";

/// Bytes encoded as one MessagePack binary (a plain `Vec<u8>` would be an
/// array of numbers).
struct ByteBuf(Vec<u8>);

impl Serialize for ByteBuf {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> std::result::Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> std::result::Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
        }
        d.deserialize_byte_buf(Visit)
    }
}

/// A random integer in `0..=100`, as Python's `randint(0, 100)`.
fn randint() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: `b` is valid for writes of its length.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 4 {
        return std::process::id() % 101;
    }
    u32::from_ne_bytes(b) % 101
}

/// The request process: two pairs of random numbers.
fn request(q: Queue<(u32, u32)>) -> Result<Vec<(u32, u32)>, String> {
    let mut sent = Vec::new();
    for _ in 0..2 {
        let (x, y) = (randint(), randint());
        q.put((x, y)).map_err(|e| e.to_string())?;
        sent.push((x, y));
    }
    Ok(sent)
}

/// The handle process: takes pairs until the queue stays empty for 2 s,
/// printing each sum; returns the pairs it took.
fn handle(q: Queue<(u32, u32)>) -> Result<Vec<(u32, u32)>, String> {
    let mut got = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        match q.get_timeout(Duration::from_secs(2)) {
            Ok((x, y)) => {
                line("handle", format!("{x} + {y} = {}", x + y));
                kit::flush();
                got.push((x, y));
            }
            Err(GetError::Timeout) => {
                line(
                    "handle",
                    "get_timeout(2 s) -> Timeout: the queue stayed empty, done",
                );
                kit::flush();
                return Ok(got);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// §7.2, live.
fn reference_example() -> Result<()> {
    explain(
        "A queue carries whole messages from any process to any other, first in first \
         out. Queue(3) holds at most three; put() waits while it is full, get() while it \
         is empty, and get(timeout=2) gives up after two seconds (Python raises \
         queue.Empty; brood returns GetError::Timeout). The reference's example: a \
         request process puts two pairs of random numbers, a handle process takes them \
         and prints the sums, and stops once the queue stays empty for 2 s. (The handler \
         sleeps 0.2 s per round here instead of 1 s.)",
    );
    kit::reference("§7.2", PYTHON_7_2);
    kit::rust(RUST_7_2);
    let q = Queue::<(u32, u32)>::bounded(3)?;
    let mut p1 = Guarded(
        Process::builder()
            .name("request")
            .start_method(StartMethod::Fork)
            .target_with(request, q.clone()),
    );
    let mut p2 = Guarded(
        Process::builder()
            .name("handle")
            .start_method(StartMethod::Fork)
            .target_with(handle, q.clone()),
    );
    let t0 = Instant::now();
    kit::flush();
    p1.start()?;
    p2.start()?;
    let sent = p1.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?;
    let got = p2.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?;
    line(
        "parent",
        format!(
            "request put {sent:?}; handle took {got:?}; both joined after {:.1} s",
            t0.elapsed().as_secs_f64()
        ),
    );
    ensure!(
        sent == got,
        "the handler should take exactly what was put, in order"
    );
    ensure!(q.is_empty(), "the queue should be empty");
    println!();
    Ok(())
}

/// A child puts 10 MiB and exits; the parent joins it before reading.
fn join_before_reading() -> Result<()> {
    explain(
        "Python's trap: a child that put() a large object on a multiprocessing.Queue \
         cannot be joined until someone reads it. Its feeder thread is still pushing \
         the bytes into a pipe nobody drains, and the child waits for that thread \
         before it exits, so p.join() before q.get() hangs (the documentation's \
         \"joining processes that use queues\"). brood's put copies the message into \
         shared memory and returns: the child is gone at once, and the message waits \
         in the queue.",
    );
    python(
        "q = Queue()\n\
         p = Process(target=lambda q: q.put(b'x' * (10 << 20)), args=(q,))\n\
         p.start()\n\
         p.join()          # hangs for ever: the 10 MiB are still in the child's feeder thread\n\
         data = q.get()",
    );
    let q = Queue::<ByteBuf>::new()?;
    let mut child = Guarded(Process::builder().name("big-put").target_with(
        |q: Queue<ByteBuf>| {
            let data: Vec<u8> = (0..10u32 << 20).map(|i| (i % 251) as u8).collect();
            q.put(ByteBuf(data)).map_err(|e| e.to_string())
        },
        q.clone(),
    ));
    kit::flush();
    let t0 = Instant::now();
    child.start()?;
    child.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?;
    line(
        "parent",
        format!(
            "child put 10 MiB and was joined after {:.0} ms; qsize() = {}; nobody has read yet",
            t0.elapsed().as_secs_f64() * 1e3,
            q.qsize()
        ),
    );
    let data = q.get_timeout(BOUND)?.0;
    let intact =
        data.len() == 10 << 20 && data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8);
    line(
        "parent",
        format!("get() -> {} bytes, intact: {intact}", data.len()),
    );
    ensure!(intact, "the 10 MiB should arrive intact");
    println!();
    Ok(())
}

/// A producer: numbered messages tagged with its index, until the queue is
/// closed.
fn producer((q, index): (Queue<(u32, u64)>, u32)) -> u64 {
    let mut n = 0;
    loop {
        match q.put((index, n)) {
            Ok(()) => n += 1,
            Err(PutError::Closed(_)) => return n,
            Err(_) => return n,
        }
    }
}

/// Three producers; one is SIGKILLed while they all run.
fn killed_producer() -> Result<()> {
    explain(
        "Python's other trap: a producer killed while it holds the queue's internal lock \
         (its feeder thread writes into the shared pipe under it) leaves the lock held \
         for ever, and every other producer blocks. brood's queue has two robust \
         process-shared locks (one per side) that the kernel hands over when a holder \
         dies, and a message becomes visible only once it is completely written, so a \
         kill at any instant loses at most the one message the victim was putting.",
    );
    python(
        "q = Queue(64)\n\
         ps = [Process(target=producer, args=(q, i)) for i in range(3)]\n\
         ...                        # while they run:\n\
         os.kill(ps[1].pid, SIGKILL) # if it held the queue's lock, the others hang",
    );
    let q = Queue::<(u32, u64)>::bounded(64)?;
    let mut producers = Vec::new();
    for index in 0..3u32 {
        let mut p = Guarded(
            Process::builder()
                .name(format!("producer-{index}"))
                .target_with(producer, (q.clone(), index)),
        );
        kit::flush();
        p.start()?;
        producers.push(p);
    }
    let mut before = [0u64; 3];
    let mut last = [None::<u64>; 3];
    let take = |counts: &mut [u64; 3], last: &mut [Option<u64>; 3], n: usize| -> Result<()> {
        for _ in 0..n {
            let (who, seq) = q.get_timeout(BOUND)?;
            let who = who as usize;
            ensure!(
                last[who] < Some(seq),
                "producer {who}'s messages out of order"
            );
            last[who] = Some(seq);
            counts[who] += 1;
        }
        Ok(())
    };
    take(&mut before, &mut last, 30_000)?;
    producers[1].kill()?;
    let killed = producers[1].join_timeout(BOUND);
    line(
        "parent",
        format!(
            "took 30000 messages (per producer: {before:?}); SIGKILLed producer-1: join -> {}",
            match &killed {
                Ok(_) => "returned".to_string(),
                Err(e) => e.to_string(),
            }
        ),
    );
    // Drain what producer-1 had put before it died, then count fresh ones.
    let mut after = [0u64; 3];
    take(&mut after, &mut last, 30_000)?;
    line(
        "parent",
        format!("30000 more messages after the kill, per producer: {after:?}"),
    );
    ensure!(
        after[0] > 0 && after[2] > 0,
        "the surviving producers should go on"
    );
    q.close();
    let mut totals = Vec::new();
    for (i, p) in producers.iter_mut().enumerate() {
        if i == 1 {
            continue;
        }
        totals.push(p.join_timeout(BOUND)?);
    }
    line(
        "parent",
        format!("close(): the survivors' puts fail with Closed; they put {totals:?} in all"),
    );
    if killed.is_ok() {
        bail!("the killed producer should not have returned a value");
    }
    println!();
    Ok(())
}

/// The reference's Queue example, then what brood's queues fix.
pub(crate) fn run() -> Result<()> {
    reference_example()?;
    join_before_reading()?;
    killed_producer()?;
    ensure!(
        brood::active_children().is_empty(),
        "every child should be joined"
    );
    Ok(())
}
