//! The event engine: the reference links an article on a multi-process
//! event engine (a timer event, a handler printing in another process) but
//! shows none of its code; this topic runs brood's `EventEngine` doing
//! that, then shows a handler that panics and a worker killed mid-event.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use brood::events::{Event, EventEngine, Reason, Stop};
use serde::{Deserialize, Serialize};

use super::kit::{self, BOUND, explain, line};

/// The reference's words on the engine (its list of linked articles),
/// verbatim; the article's code is cut off there.
const REFERENCE_LINK: &str = "\
详解Python实现多进程异步事件驱动引擎

本文介绍了详解Python实现多进程异步事件驱动引擎,分享给大家,具体如下: 多进程异步事件驱动逻辑 逻辑 code";

const PYTHON: &str = "\
from multiprocessing import Process, Queue
import os, threading, time

class EventEngine:
    def __init__(self):
        self.queue, self.handlers = Queue(), {}
    def register(self, kind, handler):
        self.handlers.setdefault(kind, []).append(handler)
    def put(self, kind, payload):
        self.queue.put((kind, payload))
    def _run(self):                       # in the worker process
        while (item := self.queue.get()) is not None:
            for h in self.handlers.get(item[0], []):
                h(item)
    def _timer(self, period, kind):
        while not self.stopped.wait(period):
            self.put(kind, os.getpid())
    def start(self, period):
        self.stopped = threading.Event()
        self.worker = Process(target=self._run); self.worker.start()
        threading.Thread(target=self._timer, args=(period, \"timer\")).start()
    def stop(self):
        self.stopped.set(); self.queue.put(None); self.worker.join()

def on_timer(event):
    print(\"timer event from\", event[1], \"handled in\", os.getpid())

engine = EventEngine()
engine.register(\"timer\", on_timer)
engine.start(0.2); time.sleep(1); engine.stop()";

const RUST: &str = "\
#[derive(Clone, Serialize, Deserialize)]
struct Tick { from: i32 }

fn on_timer(event: &Event<Tick>) {
    println!(\"timer event from {} handled in {}\", event.payload.from, getpid());
}

let mut engine = EventEngine::builder().workers(2).build()?;
engine.register(\"timer\", on_timer);
engine.every(Duration::from_millis(200), Event::new(\"timer\", Tick { from: getpid() }))?;
engine.start()?;
sleep(Duration::from_secs(1));
let report = engine.stop(Stop::Drain)?;   // or Stop::Drop";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    from: i32,
    n: u32,
}

/// Prints the event, labelled with this worker's pid; fails if it runs in
/// the process that put it.
fn on_timer(event: &Event<Tick>) -> Result<(), String> {
    let me = brood::os::getpid().as_raw();
    if me == event.payload.from {
        return Err("handled in the engine's own process".into());
    }
    line(
        "handler",
        format!(
            "{} event from {} handled in {me}",
            event.kind, event.payload.from
        ),
    );
    Ok(())
}

/// Fails on the event numbered 1 (a panic would do the same, but print a
/// backtrace note on stderr), sleeps forever on 2 (to be killed).
fn fragile(event: &Event<Tick>) -> Result<(), String> {
    match event.payload.n {
        1 => return Err("handler gave up on event 1".into()),
        2 => {
            line("handler", "event 2: sleeping until someone kills me");
            std::thread::sleep(Duration::from_secs(3600));
        }
        n => line("handler", format!("event {n} handled")),
    }
    Ok(())
}

fn timer_example() -> Result<()> {
    let me = brood::os::getpid().as_raw();
    let mut engine = EventEngine::builder().workers(2).build()?;
    engine.register("timer", on_timer);
    engine.every(
        Duration::from_millis(200),
        Event::new("timer", Tick { from: me, n: 0 }),
    )?;
    engine.start()?;
    line("engine", "started: 2 workers, a timer every 200 ms");
    kit::flush();
    std::thread::sleep(Duration::from_millis(1_000));
    let report = engine.stop(Stop::Drain)?;
    line(
        "engine",
        format!("stopped (drain): {} timer events handled", report.handled),
    );
    if let Ok(f) = engine.failures().try_recv() {
        bail!("a handler failed: {f}");
    }
    ensure!(
        (2..=6).contains(&report.handled),
        "about 5 timer events in 1 s at 200 ms, got {}",
        report.handled
    );
    Ok(())
}

fn failures_example() -> Result<()> {
    let mut engine = EventEngine::builder().workers(1).build()?;
    engine.register("job", fragile);
    engine.start()?;
    for n in 0..=3 {
        engine.put(Event::new("job", Tick { from: 0, n }))?;
    }
    let failed = engine.failures().recv_timeout(BOUND)?;
    line("engine", format!("reported: {failed}"));
    ensure!(
        matches!(failed.reason, Reason::Error(_)),
        "expected a handler error, got {failed}"
    );
    // Event 2 is now in the worker's hands, sleeping: kill the worker.
    std::thread::sleep(Duration::from_millis(200));
    let pid = failed.pid.unwrap_or(0);
    ensure!(pid > 0, "the failure names the worker's pid");
    // SAFETY: kill(2) of the worker the engine just reported, still running.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    ensure!(rc == 0, "kill {pid}: {}", std::io::Error::last_os_error());
    line("engine", format!("sent SIGKILL to worker {pid}"));
    let lost = engine.failures().recv_timeout(BOUND)?;
    line("engine", format!("reported: {lost}"));
    ensure!(
        matches!(&lost.reason, Reason::Lost(how) if how.contains("SIGKILL")),
        "expected a lost event, got {lost}"
    );
    let report = engine.stop(Stop::Drain)?;
    line(
        "engine",
        format!(
            "stopped (drain): {} handled, {} lost; event 3 ran in the replacement worker",
            report.handled, report.lost
        ),
    );
    ensure!(
        report.handled == 3 && report.lost == 1,
        "expected 3 handled (0, 1 failed, 3) and 1 lost, got {report:?}"
    );
    Ok(())
}

pub(crate) fn run() -> Result<()> {
    explain(
        "An event engine: events of a kind go to handlers registered for that kind, run in \
         worker processes; a timer puts an event periodically. The reference links an \
         article on one, but its code is cut off in the reference.",
    );
    kit::reference_says(
        "§ (its linked articles, at the end)",
        REFERENCE_LINK,
        PYTHON,
    );
    kit::rust(RUST);
    timer_example()?;
    explain(
        "A handler that fails (returns an error, or panics) fails only its own event, \
         reported with the message; a \
         worker killed in the middle of an event is replaced by the engine's supervisor, \
         and the event it held is reported lost, with how the worker died. Events of one \
         kind keep their order: they all go through the same worker's queue.",
    );
    failures_example()?;
    ensure!(
        brood::active_children().is_empty(),
        "every worker should be joined"
    );
    Ok(())
}
