//! `brood::Pool`, Python's `multiprocessing.Pool`: the reference's pool
//! example (four workers, `apply_async`, `close`, `join`, `get`), `map` over
//! a range, and what brood fixes: a worker killed mid-task fails that task
//! with `WorkerLost` while the others finish (Python's `get()` would wait
//! forever), a `Queue` handed to the workers without a Manager, and a
//! closure that captures in a pool that forks (`pool.forked()`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, ensure};
use brood::{ErrorKind, Pool, Queue, os};

use super::kit::{self, BOUND, explain, line, line_wrapped, python};

/// The reference's pool example, §6, verbatim.
const POOL: &str = r##"from multiprocessing import Pool
from time import sleep,ctime

pool = Pool(4)    # 创建进程池
# 进程池事件
def worker(msg):
  sleep(2)
  print(msg)
  return ctime()

# 向进程池添加执行事件
for i in range(4):
  msg = "Hello %d"%i

  # r 代表func事件的一个对象
  r = pool.apply_async(func=worker,args=(msg,))

pool.close()    # 关闭进程池
pool.join()     # 回收进程池

# Hello 3
# Hello 2
# Hello 0
# Hello 1"##;

/// Each worker's handle on the queue the initializer gave it.
static WORKER_QUEUE: std::sync::OnceLock<Queue<(u32, i32)>> = std::sync::OnceLock::new();

/// Python's `ctime()`, to the millisecond: the time of day (UTC).
fn clock() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let s = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        now.subsec_millis()
    )
}

/// What the reference's worker returns here: its message, `ctime()` when
/// it finished, and the pid of the worker that ran it.
type Done = (String, String, i32);

pub(crate) fn run() -> Result<()> {
    explain(
        "A pool keeps a fixed set of worker processes and hands them tasks, so a program \
         with many short tasks does not pay for a new process each time. brood::Pool has \
         Python's verbs -- apply, apply_async (an AsyncResult with get/wait/ready/successful), \
         map, imap, imap_unordered, starmap, close, terminate, join -- and runs the same \
         functions Process runs: ones that capture nothing, under every start method.",
    );
    kit::reference("§6", POOL);
    kit::rust(
        "let pool = Pool::new(4)?;\n\
         let results: Vec<_> = (0..4)\n\
         \x20   .map(|i| pool.apply_async(|msg: String| { sleep(500ms); (msg, ctime(), getpid()) }, format!(\"Hello {i}\")))\n\
         \x20   .collect::<Result<_>>()?;\n\
         pool.close();\n\
         pool.join()?;\n\
         for r in &results { r.get()? }   // Python's r.get(); here each value comes back",
    );
    let pool = Pool::new(4)?;
    let pids = pool.worker_pids();
    line(
        "parent",
        format!(
            "Pool::new(4) started workers {pids:?} (sleeping 0.5 s, not 2, to keep the tour short)"
        ),
    );
    let t0 = Instant::now();
    let results = (0..4)
        .map(|i| {
            pool.apply_async(
                |msg: String| -> Done {
                    std::thread::sleep(Duration::from_millis(500));
                    (msg, clock(), os::getpid().as_raw())
                },
                format!("Hello {i}"),
            )
        })
        .collect::<brood::Result<Vec<_>>>()?;
    pool.close();
    pool.join()?;
    let elapsed = t0.elapsed();
    let mut done: Vec<Done> = results
        .iter()
        .map(|r| r.get_timeout(BOUND))
        .collect::<brood::Result<_>>()?;
    line(
        "parent",
        format!(
            "close() then join() returned after {} ms: four 0.5 s tasks ran side by side",
            elapsed.as_millis()
        ),
    );
    done.sort_by(|a, b| a.1.cmp(&b.1));
    for (msg, at, pid) in &done {
        line(
            "parent",
            format!("get() -> {msg:?}, finished {at} in worker {pid}"),
        );
    }
    let mut used: Vec<i32> = done.iter().map(|d| d.2).collect();
    used.sort();
    used.dedup();
    ensure!(
        used.len() == 4,
        "the four tasks ran in {} workers",
        used.len()
    );
    ensure!(
        elapsed < Duration::from_millis(1_900),
        "four 0.5 s tasks on four workers took {elapsed:?}"
    );
    println!();

    explain(
        "map(f, range) cuts the input into chunks (Python's automatic chunksize: \
         len / (4 * processes), rounded up), sends each to a worker, and returns the values \
         in order.",
    );
    python("with Pool(4) as pool:\n    print(pool.map(square, range(10)))");
    let pool = Pool::new(4)?;
    let squares = pool.map(|x: u64| x * x, 0..10)?;
    line(
        "parent",
        format!("pool.map(|x| x * x, 0..10) = {squares:?}"),
    );
    ensure!(squares == (0..10).map(|x| x * x).collect::<Vec<u64>>());
    println!();

    explain(
        "What brood fixes. In Python, a pool worker that dies -- killed, segfault, the OOM \
         killer -- takes its task with it, and that task's get() waits forever. brood's pool \
         knows which task each worker holds: the dead worker's task fails with a WorkerLost \
         error that says how it died, a new worker takes its place, and the other tasks \
         finish.",
    );
    let busy = (0..4)
        .map(|i| {
            pool.apply_async(
                |i: u32| -> (u32, i32) {
                    std::thread::sleep(Duration::from_millis(600));
                    (i, os::getpid().as_raw())
                },
                i,
            )
        })
        .collect::<brood::Result<Vec<_>>>()?;
    std::thread::sleep(Duration::from_millis(150));
    let before = pool.worker_pids();
    let victim = before[0];
    os::kill(victim, libc::SIGKILL)?;
    line(
        "parent",
        format!("four 0.6 s tasks running; kill -9 {victim} (a worker)"),
    );
    let mut lost = 0;
    for r in &busy {
        match r.get_timeout(BOUND) {
            Ok((i, pid)) => line("parent", format!("task {i}: get() -> done in worker {pid}")),
            Err(e) if e.kind() == ErrorKind::WorkerLost => {
                lost += 1;
                line_wrapped("parent", "a task: get() -> WorkerLost:", &e.to_string());
                ensure!(e.signal() == Some(libc::SIGKILL), "lost to {e}");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let after = pool.worker_pids();
    line(
        "parent",
        format!("workers before {before:?}, after {after:?}: {victim} was replaced"),
    );
    ensure!(lost == 1, "{lost} tasks lost to one kill");
    ensure!(
        after.len() == 4 && !after.contains(&victim),
        "workers after the kill: {after:?}"
    );
    let again = pool.apply(|x: u32| x + 1, 41)?;
    line(
        "parent",
        format!("and the pool goes on: apply(|x| x + 1, 41) = {again}"),
    );
    pool.close();
    pool.join()?;
    println!();

    explain(
        "The reference's pitfall: a multiprocessing.Queue does not work with a Pool (Python \
         raises RuntimeError: Queue objects should only be shared between processes through \
         inheritance), and it says to use Manager().Queue(), a server process every put and \
         get goes through. brood's Queue is a ring in shared memory whose handle crosses to a \
         worker like any argument: hand it to every worker through the initializer, and the \
         tasks put into it directly. No Manager.",
    );
    python(
        "q = mp.Queue()\n\
         pool.apply_async(worker, (q,)).get()  # RuntimeError: Queue objects should only be shared ...\n\
         q = mp.Manager().Queue()                # the reference's way out: a server process",
    );
    let q: Queue<(u32, i32)> = Queue::new()?;
    let pool = Pool::builder()
        .processes(4)
        .initializer(
            |q: Queue<(u32, i32)>| {
                let _ = WORKER_QUEUE.set(q);
            },
            q.clone(),
        )
        .build()?;
    pool.map(
        |i: u32| {
            if let Some(q) = WORKER_QUEUE.get() {
                let _ = q.put((i, os::getpid().as_raw()));
            }
        },
        0..8,
    )?;
    let mut got = Vec::new();
    for _ in 0..8 {
        got.push(
            q.get_timeout(BOUND)
                .map_err(|e| anyhow::anyhow!("the queue: {e}"))?,
        );
    }
    got.sort();
    let mut senders: Vec<i32> = got.iter().map(|g| g.1).collect();
    senders.sort();
    senders.dedup();
    line(
        "parent",
        format!(
            "q.get() x 8 -> tasks {:?}, put by workers {senders:?}",
            got.iter().map(|g| g.0).collect::<Vec<_>>()
        ),
    );
    ensure!(got.iter().map(|g| g.0).eq(0..8), "the queue held {got:?}");
    pool.close();
    pool.join()?;
    println!();

    explain(
        "A closure that captures, in a pool that forks: pool.forked() forks short-lived \
         workers after the closure exists, which run only that call's tasks and are gone when \
         it returns, while the pool's own workers serve other work. Python's fork pool still \
         pickles the function: a lambda fails. Under spawn or forkserver brood says so \
         (InvalidState). Shown in a spawned child, which opts in to forking with threads (the \
         pool's supervisor is one) without changing this process.",
    );
    python(
        "with get_context('fork').Pool(2) as pool:\n\
         \x20   pool.map(lambda i: prices[i] * rate, range(4))  # PicklingError: Can't pickle <lambda>",
    );
    kit::rust(
        "unsafe { brood::allow_fork_with_threads() };  // SAFETY: no other thread holds a lock it takes\n\
         let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build()?;\n\
         let prices = Arc::new(vec![10, 20, 30, 40]);\n\
         pool.forked().map(move |i: usize| prices[i] * rate, 0..4)?",
    );
    let mut child = brood::Process::builder()
        .start_method(brood::StartMethod::Spawn)
        .target(forked_map);
    child.start()?;
    let child_pid = child.pid().map_or(0, |p| p.as_raw());
    let (values, ran_in, own, refused) = child.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?;
    kit::line_from(
        "child",
        child_pid,
        format!(
            "pool.forked().map(..) = {values:?}, in short-lived workers {ran_in:?} \
             (the pool's own: {own:?})"
        ),
    );
    // The error, wrapped, each line labelled with the child that saw it.
    let mut text = String::from("under spawn:");
    for word in refused.split(' ') {
        if text.len() + word.len() > 68 {
            kit::line_from("child", child_pid, &text);
            text = String::from(" ");
        }
        text.push(' ');
        text.push_str(word);
    }
    kit::line_from("child", child_pid, &text);
    ensure!(
        refused.starts_with("InvalidState"),
        "under spawn: {refused}"
    );
    ensure!(values == [30, 60, 90, 120], "forked map gave {values:?}");
    ensure!(
        ran_in.iter().all(|p| !own.contains(p)),
        "the closure ran in the pool's own workers"
    );
    Ok(())
}

/// What [`forked_map`] reports: values, pids the closure ran in, the pool's
/// own worker pids, and the error under spawn.
type ForkedMap = (Vec<u64>, Vec<i32>, Vec<i32>, String);

/// The forked-pool part of the topic, run in a spawned child.
fn forked_map() -> std::result::Result<ForkedMap, String> {
    // SAFETY: this child's only other threads are its pools' supervisors,
    // which hold no lock the closure takes.
    unsafe { brood::allow_fork_with_threads() };
    let go = || -> brood::Result<ForkedMap> {
        let pool = Pool::builder()
            .processes(2)
            .start_method(brood::StartMethod::Fork)
            .build()?;
        let prices = std::sync::Arc::new(vec![10u64, 20, 30, 40]);
        let rate = 3;
        let out = pool.forked().map(
            move |i: usize| (prices[i] * rate, os::getpid().as_raw()),
            0..4,
        )?;
        let own = pool.worker_pids().iter().map(|p| p.as_raw()).collect();
        let mut ran_in: Vec<i32> = out.iter().map(|o| o.1).collect();
        ran_in.sort();
        ran_in.dedup();
        let spawned = Pool::builder()
            .processes(1)
            .start_method(brood::StartMethod::Spawn)
            .build()?;
        let refused = match spawned.forked().apply(move |x: u64| x + rate, 1) {
            Err(e) => format!("{:?}: {e}", e.kind()),
            Ok(v) => format!("unexpectedly ran: {v}"),
        };
        Ok((out.iter().map(|o| o.0).collect(), ran_in, own, refused))
    };
    go().map_err(|e| e.to_string())
}
