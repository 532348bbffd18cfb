//! Beyond Python's pool (issue 13): a pool with a 1 s hard time limit and a
//! 100 MiB memory ceiling. One task loops forever, one leaks memory past the
//! ceiling, one succeeds, each outcome shown; while the pool runs, a child
//! process runs `brood top --once` and prints what the pool's status page
//! says, checked against the pool's own view.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use brood::{ErrorKind, Pool};

use super::kit::{self, BOUND, explain, line};

/// The reference's words on the pool, §6, verbatim: workers that stay to
/// run event after event -- which is what a task that never ends, or one
/// that leaks, breaks.
const WORDS: &str = "进程池的原理:创建一定数量的进程来处理事件,事件处理完进程不退出而是继续处理其他事件,直到所有事件全都处理完毕统一销毁。增加进程的重复利用,降低资源消耗。";

/// What a Python user writes today: billiard's time limits, loky's memory
/// watch, `htop` to see the workers. None of it is in `multiprocessing`.
const PYTHON: &str = r##"from concurrent.futures import ProcessPoolExecutor
pool = ProcessPoolExecutor(2)
f = pool.submit(spin_forever)     # no time limit: f.result() never returns
g = pool.submit(leak_150_mib)     # no memory ceiling: the worker keeps it
h = pool.submit(pow, 2, 10)
print(h.result())                  # 1024
# and to see the workers: htop, guessing which python3 is which"##;

/// The ceiling the tour's pool sets.
const CEILING: u64 = 100 << 20;

pub(crate) fn run() -> Result<()> {
    explain(
        "Python's pools have no time limit (a task that loops forever holds its worker \
         forever), no memory ceiling (a worker that leaked keeps the memory), and nothing \
         to show what the workers are doing. Celery's billiard, joblib's loky and htop each \
         add one; brood's pool has them all: a hard time limit after which the worker is \
         killed and replaced and the task fails with TimedOut, a soft one the task can poll \
         (brood::task_deadline), a resident-memory ceiling checked after each task, retries, \
         futures, and a status page in shared memory that `brood top` reads.",
    );
    kit::reference_says("§6", WORDS, PYTHON);
    kit::rust(
        "let pool = Pool::builder().processes(2).name(\"tour-limits\")\n\
         \x20   .hard_time_limit(Duration::from_secs(1))\n\
         \x20   .max_rss(100 << 20)\n\
         \x20   .build()?;\n\
         let spin = pool.submit(|(): ()| loop { std::hint::spin_loop() }, ())?;\n\
         let leak = pool.options().hard_time_limit(BOUND)   // a task's own limit\n\
         \x20   .submit(|mib: usize| { let v = vec![1u8; mib << 20]; std::mem::forget(v); mib }, 150)?;\n\
         let ok = pool.submit(|(b, e): (u64, u32)| b.pow(e), (2, 10))?;\n\
         // meanwhile, from a child process: brood top --once",
    );
    let pool = Pool::builder()
        .processes(2)
        .name("tour-limits")
        .hard_time_limit(Duration::from_secs(1))
        .max_rss(CEILING)
        .build()?;
    let before = pool.worker_pids();
    line(
        "parent",
        format!("a pool \"tour-limits\" of 2 workers {before:?}: hard limit 1 s, ceiling 100 MiB"),
    );
    let t0 = Instant::now();
    let spin = pool.submit(
        |(): ()| -> u64 {
            loop {
                std::hint::spin_loop();
            }
        },
        (),
    )?;
    // Its own, longer limit: touching 150 MiB of fresh pages can take more
    // than a second on a busy machine, and this task must finish.
    let leak = pool.options().hard_time_limit(BOUND).submit(
        |mib: usize| -> usize {
            let v = vec![1u8; mib << 20];
            std::mem::forget(v);
            mib
        },
        150usize,
    )?;
    let ok = pool.submit(|(b, e): (u64, u32)| b.pow(e), (2u64, 10u32))?;

    // While the spinning task holds its worker: a snapshot from a child.
    std::thread::sleep(Duration::from_millis(300));
    kit::flush();
    let exe = std::env::current_exe().context("cannot find the brood binary")?;
    let child = std::process::Command::new(&exe)
        .args(["top", "--once"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {} top --once", exe.display()))?;
    let child_pid = child.id();
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "brood top --once failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let ours: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("tour-limits"))
        .take_while(|l| !l.trim().is_empty())
        .collect();
    ensure!(
        !ours.is_empty(),
        "brood top --once (a child process) did not list the pool \"tour-limits\":\n{text}"
    );
    line(
        "child",
        format!(
            "`brood top --once`, run in a child process (pid {}) while the pool works, says:",
            child_pid
        ),
    );
    for row in &ours {
        kit::line_from("brood top", child_pid, row.trim_end());
    }
    let pids_now = pool.worker_pids();
    for pid in &pids_now {
        ensure!(
            ours.iter().any(|l| l.contains(&pid.to_string())),
            "brood top does not show worker {pid}, which the pool has"
        );
    }
    line(
        "parent",
        format!("the pool's own view, {pids_now:?}: every worker is in brood top's snapshot"),
    );

    let spun = spin.result_timeout(BOUND);
    let ran = t0.elapsed();
    match &spun {
        Err(e) if e.kind() == ErrorKind::TimedOut => line(
            "parent",
            format!(
                "the endless loop failed with TimedOut after {:.2} s: {e}",
                ran.as_secs_f64()
            ),
        ),
        other => anyhow::bail!("the endless loop should have timed out, got {other:?}"),
    }
    let leaked = leak
        .result_timeout(BOUND)
        .context("the leaking task's result still counts")?;
    ensure!(leaked == 150, "the leaking task returned {leaked}");
    line(
        "parent",
        format!(
            "the task that leaked {leaked} MiB returned its value; its worker, past the \
             100 MiB ceiling afterwards, was replaced"
        ),
    );
    let value = ok.result_timeout(BOUND)?;
    ensure!(value == 1024, "2^10 came back as {value}");
    line("parent", format!("the plain task returned 2^10 = {value}"));
    let deadline = Instant::now() + BOUND;
    let after = loop {
        let now = pool.worker_pids();
        let replaced = now.iter().filter(|p| !before.contains(p)).count();
        if replaced >= 2 || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let replaced = after.iter().filter(|p| !before.contains(p)).count();
    ensure!(
        replaced >= 2,
        "both workers should have been replaced (timed out; past the ceiling): before \
         {before:?}, after {after:?}"
    );
    line(
        "parent",
        format!(
            "workers {before:?} became {after:?}: one killed for the time limit, one retired \
             for its memory, and the pool went on with 2"
        ),
    );
    let again = pool.apply(|x: u32| x + 1, 41)?;
    ensure!(again == 42, "the pool answered {again}");
    line(
        "parent",
        format!("and it still works: apply(x + 1, 41) = {again}"),
    );
    pool.close();
    pool.join()?;
    Ok(())
}
