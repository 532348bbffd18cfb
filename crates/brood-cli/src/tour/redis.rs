//! Distributed processes (a topic the reference links to): Python's
//! `BaseManager` master/worker over the network, done on Redis Streams with
//! brood-redis. A private `redis-server` on a free port, a worker node in
//! another process (`brood worker`), tasks by name, typed results, and a
//! task that kills its worker every time ending in the dead-letter stream.
//! Skipped, with one line saying why, when no `redis-server` is installed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use brood_redis::{ErrorKind, LocalServer, RedisPool};

use super::kit::{self, BOUND, explain, line};
use crate::redis::task;

/// The reference's words on distributed processes (one of its linked
/// articles), verbatim; the article's code is cut off there.
const REFERENCE_LINK: &str = "\
详解python分布式进程

在Thread和Process中,应当优选Process,因为Process更稳定,而且,Process可以分布到多台机器上,而Thread最多只能分布到同一台机器的多个CPU上. Python的multiprocessing模块不但支持多进程,其中managers子模块还支持把多进程分布到多台机器上.一个服务进程可以作为调度者,将任务分布到其他多个进程中,依靠网络通信.由于managers模块封装很好,不必了解网络通信的细节,就可以很容易地编写分布式多进程程序.";

const PYTHON: &str = "\
# master.py: queues served over the network by a BaseManager
from multiprocessing.managers import BaseManager
import queue
task_queue, result_queue = queue.Queue(), queue.Queue()
class QueueManager(BaseManager): pass
QueueManager.register('get_task_queue', callable=lambda: task_queue)
QueueManager.register('get_result_queue', callable=lambda: result_queue)
manager = QueueManager(address=('', 5000), authkey=b'abc')
manager.start()
task, result = manager.get_task_queue(), manager.get_result_queue()
for n in range(10):
    task.put(n)
print([result.get(timeout=10) for _ in range(10)])
manager.shutdown()

# worker.py, on another machine
QueueManager.register('get_task_queue'); QueueManager.register('get_result_queue')
m = QueueManager(address=('master', 5000), authkey=b'abc'); m.connect()
task, result = m.get_task_queue(), m.get_result_queue()
while True:
    n = task.get(timeout=1)
    result.put(n * n)";

const RUST: &str = "\
#[brood::task]
fn square(x: u64) -> u64 { x * x }

// worker node, on any machine (or `brood worker --redis URL --name tour`):
brood_redis::Worker::new(url, \"tour\").processes(2).run()?;

// caller:
let pool = RedisPool::connect(url, \"tour\")?;
let squares: Vec<u64> = pool.map(\"brood::redis::square\", 0..10u64)?;
let who = pool.apply_async::<(u32, i32, String), _>(\"brood::redis::whoami\", (1u32,))?.get()?;
let err = pool.apply::<u64, _>(\"brood::redis::crash\", (0u64,)).unwrap_err();  // a dead letter";

/// The worker node process: killed and reaped when dropped.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn run() -> Result<()> {
    explain(
        "The reference's linked article spreads work over machines with a BaseManager: a \
         master serves two queues over TCP, workers elsewhere connect, take tasks and put \
         results. If a worker dies holding a task, that task is gone and the master's \
         result.get() waits forever (or times out and never learns which task). \
         brood-redis does the same job on Redis Streams: tasks are #[brood::task] \
         functions called by name, a worker node runs them in a local brood Pool, stores \
         each result before it acknowledges the task, and a task whose worker dies is \
         delivered again (after a lease) -- or, after too many deaths, lands in a \
         dead-letter stream with the reason.",
    );
    kit::reference_says("§links", REFERENCE_LINK, PYTHON);
    kit::rust(RUST);
    if !LocalServer::available() {
        line(
            "parent",
            "skipped: no redis-server on PATH (apt-get install redis-server, then run \
             `brood tour redis` again)",
        );
        return Ok(());
    }
    let server = LocalServer::start().context("starting a private redis-server")?;
    let url = server.url();
    line(
        "parent",
        format!(
            "started a private redis-server (pid {}) at {url}",
            server.pid().unwrap_or(0)
        ),
    );
    let exe = std::env::current_exe()?;
    kit::flush();
    let node = Node(
        Command::new(exe)
            .args([
                "worker",
                "--redis",
                &url,
                "--name",
                "tour",
                "--processes",
                "2",
            ])
            .args(["--lease", "1", "--max-deliveries", "2", "--quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `brood worker`")?,
    );
    line(
        "parent",
        format!(
            "started `brood worker --redis {url} --name tour --processes 2` (pid {})",
            node.0.id()
        ),
    );
    let pool = RedisPool::connect(&url, "tour")?;
    let t0 = Instant::now();
    let first = pool.apply_async::<u64, _>(&task("square"), (7u64,))?;
    let seven = first.result_timeout(BOUND)?;
    line(
        "parent",
        format!(
            "apply_async(square, (7,)) -> {seven} in {:.1} ms (task id {}, delivered {} time)",
            t0.elapsed().as_secs_f64() * 1e3,
            first.id(),
            first.deliveries()
        ),
    );
    ensure!(seven == 49, "square(7) came back as {seven}");
    let hs = pool.submit_all::<u64, _, _>(&task("square"), (0..10u64).map(|x| (x,)))?;
    let squares: Vec<u64> = hs
        .iter()
        .map(|h| h.result_timeout(BOUND))
        .collect::<brood_redis::Result<_>>()?;
    line("parent", format!("map(square, 0..10) -> {squares:?}"));
    ensure!(squares == (0..10).map(|x| x * x).collect::<Vec<u64>>());
    let who = pool
        .apply_async::<(u32, i32, String), _>(&task("whoami"), (1u32,))?
        .result_timeout(BOUND)?;
    line(
        "parent",
        format!(
            "whoami ran in pid {} on host {:?} (this tour is pid {}): a pool process of the \
             worker node",
            who.1,
            who.2,
            std::process::id()
        ),
    );
    ensure!(who.1 != std::process::id() as i32);
    println!();
    explain(
        "A task that kills the process running it, every time: the worker node sees its \
         pool process die (WorkerLost), counts a delivery and retries with a backoff; after \
         --max-deliveries 2 the task goes to the dead-letter stream and the caller gets a \
         DeadLetter error that says why. The worker node itself lives on.",
    );
    let bad = pool.apply_async::<u64, _>(&task("crash"), (0u64,))?;
    let err = match bad.result_timeout(BOUND) {
        Ok(v) => anyhow::bail!("the crashing task returned {v}"),
        Err(e) => e,
    };
    line("parent", format!("crash(0) -> {:?}: {err}", err.kind()));
    ensure!(err.kind() == ErrorKind::DeadLetter, "{err}");
    let after = pool
        .apply_async::<u64, _>(&task("square"), (12u64,))?
        .result_timeout(BOUND)?;
    line(
        "parent",
        format!("and the node goes on: square(12) -> {after}"),
    );
    ensure!(after == 144);
    let status = brood_redis::status(&url, Some("tour"))?;
    println!();
    line("parent", format!("`brood redis status {url} tour`:"));
    for l in status[0].to_string().lines() {
        println!("      {l}");
    }
    ensure!(status[0].dead == 1 && status[0].workers.len() == 1);
    drop(pool);
    drop(node);
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}
