//! Distributed processes: the reference links an article on Python's
//! `multiprocessing.managers` (a master serves a task queue and a result
//! queue over TCP with an auth key; workers, on other machines, connect,
//! take tasks and put results), but its text is cut off before the code.
//! This topic runs that master/worker pattern with brood's `Manager` on
//! 127.0.0.1, then shows what Python's does not: a worker killed with a
//! task in hand does not block the master, and its task is reported.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use brood::{Manager, Process};

use super::kit::{self, BOUND, explain, line};

/// The reference's words on distributed processes (its list of linked
/// articles), verbatim; the article is cut off there, before its code.
const REFERENCE_LINK: &str = "\
详解python分布式进程

在Thread和Process中,应当优选Process,因为Process更稳定,而且,Process可以分布到多台机器上,而Thread最多只能分布到同一台机器的多个CPU上. Python的multiprocessing模块不但支持多进程,其中managers子模块还支持把多进程分布到多台机器上.一个服务进程可以作为调度者,将任务分布到其他多个进程中,依靠网络通信.由于managers模块封装很好,不必了解网络通信的细节,就可以很容易地编写分布式多进程程序. 举个例子:如果我们已经有一个通";

/// The master/worker pair that example goes on with (the usual
/// `task_master.py` / `task_worker.py`).
const PYTHON: &str = "\
# task_master.py
import random, queue
from multiprocessing.managers import BaseManager

task_queue, result_queue = queue.Queue(), queue.Queue()
class QueueManager(BaseManager): pass
QueueManager.register('get_task_queue', callable=lambda: task_queue)
QueueManager.register('get_result_queue', callable=lambda: result_queue)
manager = QueueManager(address=('', 5000), authkey=b'abc')
manager.start()
task, result = manager.get_task_queue(), manager.get_result_queue()
for i in range(10):
    n = random.randint(0, 10000)
    print('Put task %d...' % n)
    task.put(n)
for i in range(10):
    print('Result: %s' % result.get(timeout=10))
manager.shutdown()

# task_worker.py (on another machine)
import queue
from multiprocessing.managers import BaseManager
class QueueManager(BaseManager): pass
QueueManager.register('get_task_queue')
QueueManager.register('get_result_queue')
m = QueueManager(address=('127.0.0.1', 5000), authkey=b'abc')
m.connect()
task, result = m.get_task_queue(), m.get_result_queue()
for i in range(10):
    try:
        n = task.get(timeout=1)
        print('run task %d * %d...' % (n, n))
        result.put('%d * %d = %d' % (n, n, n*n))
    except queue.Empty:
        print('task queue is empty.')";

const RUST: &str = "\
// master
let master = Manager::serve(&\"127.0.0.1:0\".parse()?, b\"abc\")?;
let tasks = master.named(\"tasks\").joinable_queue::<u64>(0)?;
let results = master.named(\"results\").queue::<String>(0)?;
for n in [..10 numbers..] { tasks.put(&n)?; }
// start 2 workers with master.address() (here: child processes)
for _ in 0..10 { println!(\"Result: {}\", results.get_timeout(Duration::from_secs(10))?); }

// worker (another program, another machine)
let m = Manager::connect(&address.parse()?, b\"abc\")?;
let tasks = m.named(\"tasks\").joinable_queue::<u64>(0)?;
let results = m.named(\"results\").queue::<String>(0)?;
while let Ok(n) = tasks.get_timeout(Duration::from_secs(1)) {
    results.put(&format!(\"{n} * {n} = {}\", n * n))?;
    tasks.task_done()?;
}";

const KEY: &[u8] = b"abc";

/// The worker: a separate process that knows only the address and the key.
fn worker(address: String) -> u32 {
    let Ok(address) = address.parse() else {
        return 0;
    };
    let Ok(m) = Manager::connect(&address, KEY) else {
        return 0;
    };
    let (Ok(tasks), Ok(results)) = (
        m.named("tasks").joinable_queue::<u64>(0),
        m.named("results").queue::<String>(0),
    ) else {
        return 0;
    };
    let mut done = 0;
    while let Ok(n) = tasks.get_timeout(Duration::from_secs(1)) {
        line("worker", format!("run task {n} * {n}"));
        if results.put(&format!("{n} * {n} = {}", n * n)).is_err() || tasks.task_done().is_err() {
            break;
        }
        done += 1;
    }
    done
}

/// A worker that takes one task and never finishes it (to be killed).
fn stuck_worker(address: String) -> u32 {
    let Ok(address) = address.parse() else {
        return 0;
    };
    let Ok(m) = Manager::connect(&address, KEY) else {
        return 0;
    };
    let (Ok(tasks), Ok(took)) = (
        m.named("tasks").joinable_queue::<u64>(0),
        m.named("took").event(),
    ) else {
        return 0;
    };
    if let Ok(n) = tasks.get() {
        line("worker", format!("took task {n}; now hanging until killed"));
        let _ = took.set();
        std::thread::sleep(Duration::from_secs(3600));
    }
    0
}

fn master_worker() -> Result<()> {
    let master = Manager::serve(&"127.0.0.1:0".parse()?, KEY)?;
    let address = master.address().to_string();
    line("master", format!("serving on {address} with an auth key"));
    let tasks = master.named("tasks").joinable_queue::<u64>(0)?;
    let results = master.named("results").queue::<String>(0)?;
    let numbers = [7, 3_141, 42, 9_999, 256, 1_000, 12, 5_555, 81, 600];
    for n in numbers {
        line("master", format!("put task {n}"));
        tasks.put(&n)?;
    }
    kit::flush();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut p = Process::with_args(worker, address.clone());
        p.start()?;
        workers.push(p);
    }
    let mut got = Vec::new();
    for _ in numbers {
        let r = results.get_timeout(BOUND).context("waiting for a result")?;
        line("master", format!("result: {r}"));
        got.push(r);
    }
    let mut done = 0;
    for mut p in workers {
        done += p.join_timeout(BOUND)?;
    }
    line(
        "master",
        format!("the 2 workers did {done} tasks between them"),
    );
    ensure!(done == 10, "10 tasks, done {done}");
    for n in numbers {
        let want = format!("{n} * {n} = {}", n * n);
        ensure!(got.contains(&want), "missing result {want}");
    }
    Ok(())
}

fn killed_worker() -> Result<()> {
    let master = Manager::serve(&"127.0.0.1:0".parse()?, KEY)?;
    let address = master.address().to_string();
    let tasks = master.named("tasks").joinable_queue::<u64>(0)?;
    let took = master.named("took").event()?;
    tasks.put(&41)?;
    kit::flush();
    let mut stuck = Process::with_args(stuck_worker, address);
    stuck.start()?;
    ensure!(took.wait_timeout(BOUND)?, "the worker never took its task");
    ensure!(
        !tasks.join_timeout(Duration::from_millis(200))?,
        "join should wait for the task in the worker's hands"
    );
    line("master", "join() waits: task 41 is in a worker's hands");
    let t = Instant::now();
    stuck.kill()?;
    let _ = stuck.join_timeout(BOUND);
    line("master", "sent SIGKILL to that worker");
    ensure!(
        tasks.join_timeout(BOUND)?,
        "join still waits after the worker died"
    );
    let abandoned = tasks.abandoned()?;
    line(
        "master",
        format!(
            "join() returned {} ms after the kill; abandoned tasks: {abandoned:?}",
            t.elapsed().as_millis()
        ),
    );
    ensure!(
        abandoned == [41],
        "expected task 41 abandoned, got {abandoned:?}"
    );
    Ok(())
}

pub(crate) fn run() -> Result<()> {
    explain(
        "Distributed processes: a master serves a task queue and a result queue on a TCP \
         port with an auth key; workers, on this machine or others, connect with the key, \
         take tasks and put results. The reference links an article on Python's managers; \
         its text stops before the code, which is the usual task_master.py and \
         task_worker.py below.",
    );
    kit::reference_says(
        "§links (its linked articles: 详解python分布式进程)",
        REFERENCE_LINK,
        PYTHON,
    );
    kit::rust(RUST);
    master_worker()?;
    explain(
        "Where brood differs: Python's managers pickle (anyone with the key can run code in \
         the server), and a worker that dies with a task in hand loses it while the master \
         waits forever. brood sends typed values only, and a joinable queue hands a dead \
         worker's unfinished tasks back as abandoned(), so join() returns. And the \
         workers here run on the master's host: after the handshake over TCP they move \
         to shared-memory rings (the server also listens on a local name it tells them), \
         so a proxy call costs a copy, not two trips through the network stack, and the \
         plain results queue is a ring in shared memory they put on themselves, with no \
         call to the server at all; workers on other hosts stay on TCP.",
    );
    killed_worker()?;
    ensure!(
        brood::active_children().is_empty(),
        "every worker should be joined"
    );
    Ok(())
}
