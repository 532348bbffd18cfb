//! `brood top`, driven as a user would, against a pool this test runs: the
//! `--once` snapshot names the pool and its owner, and shows the worker
//! pids, each worker's task count and the running task as the pool itself
//! sees them; the live view redraws; a pool that ended is gone from it.
//!
//! Every run of the binary is bounded: it is killed if it overstays.

use std::collections::HashMap;
use std::fs::{self, File};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use brood::Pool;
use brood::os::{self, Pid};

/// Runs `brood ARGS` for at most `limit` (killed then); its stdout, and
/// whether it exited by itself with status 0.
fn brood(args: &[&str], limit: Duration) -> (bool, String) {
    let out_path = std::env::temp_dir().join(format!(
        "brood-cli-top-{}-{}",
        std::process::id(),
        args.join("_").replace(['-', '.'], "")
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_brood"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start brood");
    let deadline = Instant::now() + limit;
    let ok = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.success();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = fs::read_to_string(&out_path).unwrap();
    let _ = fs::remove_file(out_path);
    (ok, out)
}

/// One worker row of `brood top`: position, pid, state, tasks, restarts.
#[derive(Debug)]
struct Row {
    pid: Option<Pid>,
    state: String,
    tasks: u64,
    restarts: u64,
}

/// The worker rows under the pool line that names `name`.
fn rows_of(out: &str, name: &str, owner: Pid) -> Vec<Row> {
    let mut lines = out.lines();
    let title = format!("pool {name:?}  owner {owner} ");
    lines
        .by_ref()
        .find(|l| l.starts_with(&title))
        .unwrap_or_else(|| panic!("no line for pool {name:?} in:\n{out}"));
    assert!(lines.next().unwrap().trim_start().starts_with("POS"));
    lines
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            // The state is "idle for 1.0s" or "running task 7 for 0.5s".
            let after = match t[2] {
                "idle" => 5,
                "running" => 7,
                _ => 3,
            };
            Row {
                pid: t[1].parse().ok().and_then(Pid::from_raw),
                state: t[2..after].join(" "),
                tasks: t[after].parse().unwrap(),
                restarts: t[after + 1].parse().unwrap(),
            }
        })
        .collect()
}

#[test]
fn top_once_shows_the_pools_workers_as_the_pool_sees_them() {
    // SAFETY: libtest's other threads hold no lock a forked child needs.
    unsafe { brood::allow_fork_with_threads() };
    let name = format!("cli-top-{}", std::process::id());
    let pool = Pool::builder().processes(3).name(&name).build().unwrap();
    let ran: Vec<Pid> = pool.chunksize(1).map(|_: u32| os::getpid(), 0..30).unwrap();
    let mut per_pid: HashMap<Pid, u64> = HashMap::new();
    for pid in &ran {
        *per_pid.entry(*pid).or_default() += 1;
    }
    let sleeper = pool
        .apply_async(
            |ms: u64| {
                std::thread::sleep(Duration::from_millis(ms));
                os::getpid()
            },
            3000,
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let (ok, out) = brood(&["top", "--once"], Duration::from_secs(30));
    assert!(ok, "brood top --once failed:\n{out}");
    let rows = rows_of(&out, &name, os::getpid());
    let mut pids: Vec<Pid> = rows.iter().filter_map(|r| r.pid).collect();
    let mut expected = pool.worker_pids();
    pids.sort();
    expected.sort();
    assert_eq!(pids, expected, "{out}");
    for r in &rows {
        let pid = r.pid.unwrap();
        assert_eq!(
            r.tasks,
            per_pid.get(&pid).copied().unwrap_or(0),
            "{r:?}\n{out}"
        );
        assert_eq!(r.restarts, 0);
    }
    let running: Vec<&Row> = rows
        .iter()
        .filter(|r| r.state.starts_with("running task"))
        .collect();
    assert_eq!(running.len(), 1, "{out}");
    assert_eq!(running[0].pid, Some(sleeper.get().unwrap()));
    assert!(out.contains(&format!("tasks done {}", ran.len())), "{out}");

    // Once the pool is gone, so is its part of the view.
    drop(pool);
    let (ok, out) = brood(&["top", "--once"], Duration::from_secs(30));
    assert!(ok);
    assert!(!out.contains(&format!("pool {name:?}")), "{out}");
}

#[test]
fn top_without_once_redraws_until_stopped() {
    let (exited, out) = brood(&["top", "--interval", "0.2"], Duration::from_millis(1500));
    assert!(!exited, "the live view ran until it was stopped");
    assert!(
        out.matches("\x1b[H\x1b[2J").count() >= 2,
        "it redrew: {out:?}"
    );
    assert!(out.contains("brood top: "));
}
