//! The `brood` binary, driven as a user would: the tour and its topic list,
//! an unknown topic, and `ps` showing processes this test made on purpose (a
//! zombie among them).
//!
//! Every wait is bounded: the binary runs under a deadline and is killed if
//! it overstays, and the zombie child is waited for through its pidfd.

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use brood::os::{self, ExitStatus, ForkResult, PidFd};

/// What one run of the binary left behind.
struct Run {
    /// Whether it exited with status 0.
    success: bool,
    /// Its exit code, if it exited.
    code: Option<i32>,
    /// Everything it printed on stdout.
    stdout: String,
    /// Everything it printed on stderr.
    stderr: String,
}

/// A file name no other run of this test binary uses.
fn scratch(what: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "brood-cli-test-{}-{}-{what}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ))
}

/// Runs `brood ARGS`, killing it if it runs past `limit`. Output goes to
/// files, not pipes, so a full pipe can never stall it.
fn brood(args: &[&str], limit: Duration) -> Run {
    let (out_path, err_path) = (scratch("out"), scratch("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_brood"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("cannot start brood");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("brood {args:?} still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let run = Run {
        success: status.success(),
        code: status.code(),
        stdout: fs::read_to_string(&out_path).unwrap(),
        stderr: fs::read_to_string(&err_path).unwrap(),
    };
    let _ = fs::remove_file(out_path);
    let _ = fs::remove_file(err_path);
    run
}

/// The topic names `brood tour --list` prints, in order.
fn topic_names() -> Vec<String> {
    let run = brood(&["tour", "--list"], Duration::from_secs(30));
    assert!(run.success, "tour --list failed: {}", run.stderr);
    run.stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The row of `ps` output whose PID column (the second) is `pid`.
fn row_of(ps_output: &str, pid: i32) -> Option<Vec<String>> {
    ps_output
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cols| cols.get(1).is_some_and(|c| *c == pid.to_string()))
}

#[test]
fn tour_list_lists_every_topic() {
    let names = topic_names();
    let expected = [
        "states",
        "fork",
        "pids",
        "exit",
        "orphan",
        "zombie",
        "wait",
        "double-fork",
        "sigchld",
        "process",
        "start-methods",
        "pipe",
        "shared-memory",
        "semaphore",
        "pool",
    ];
    assert_eq!(names, expected);
    let run = brood(&["tour", "--list"], Duration::from_secs(30));
    for line in run.stdout.lines() {
        assert!(
            line.split_whitespace().count() > 2,
            "each topic has a description: {line:?}"
        );
    }
}

#[test]
fn tour_runs_every_topic_and_succeeds() {
    let names = topic_names();
    let run = brood(&["tour"], Duration::from_secs(120));
    assert!(
        run.success,
        "brood tour failed ({:?}):\n{}\n{}",
        run.code, run.stdout, run.stderr
    );
    for name in &names {
        assert!(
            run.stdout.contains(&format!("=== {name}: ")),
            "no header for topic {name} in:\n{}",
            run.stdout
        );
        assert!(
            run.stdout.contains(&format!("ok: {name} went as expected")),
            "topic {name} did not report success"
        );
    }
    assert!(!run.stdout.contains("FAILED"));
    assert!(run.stdout.contains("no zombie left behind"));
}

#[test]
fn tour_runs_one_topic() {
    let run = brood(&["tour", "zombie"], Duration::from_secs(60));
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("=== zombie: "));
    assert!(!run.stdout.contains("=== fork: "));
    assert!(
        run.stdout
            .contains("<zombie: exited, not yet reaped by PPID")
    );
}

/// The lines the tour prints for what a process did, `  WHO PID | TEXT`,
/// as `(who, pid, text)`.
fn said(stdout: &str) -> Vec<(String, i32, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let (left, text) = l.split_once(" | ")?;
            let mut cols = left.split_whitespace();
            let who = cols.next()?.to_string();
            let pid = cols.next()?.parse().ok()?;
            cols.next().is_none().then(|| (who, pid, text.to_string()))
        })
        .collect()
}

/// The number after `from pid ` in `text`.
fn pid_named_in(text: &str) -> Option<i32> {
    let rest = &text[text.find("from pid ")? + "from pid ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[test]
fn tour_pipe_carries_messages_between_processes() {
    let run = brood(&["tour", "pipe"], Duration::from_secs(60));
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("ok: pipe went as expected"));
    let lines = said(&run.stdout);
    let find = |who: &str, prefix: &str| {
        lines
            .iter()
            .find(|(w, _, t)| w == who && t.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{who}` line starting {prefix:?} in:\n{}", run.stdout))
            .clone()
    };
    // fun1 printed a message that names the pid of the process that wrote
    // it: fun2, another process, as fun2's own line shows.
    let (_, fun1, got1) = find("fun1", "recv() -> ");
    let (_, fun2, sent2) = find("fun2", "send(");
    let (_, fun2_again, got2) = find("fun2", "recv() -> ");
    assert_ne!(fun1, fun2, "two processes");
    assert_eq!(fun2, fun2_again);
    assert_eq!(pid_named_in(&got1), Some(fun2), "{got1}");
    assert_eq!(pid_named_in(&sent2), Some(fun2), "{sent2}");
    assert_eq!(pid_named_in(&got2), Some(fun1), "{got2}");
    // The file the tour reads back was written by the child that got the fd.
    let (_, writer, _) = find("fd-writer", "recv_fd() -> my fd ");
    let (_, _, holds) = find("parent", "the writer said \"done\"; the file now holds ");
    assert!(
        holds.contains(&format!(
            "\"written by pid {writer} through the fd it received\""
        )),
        "{holds}"
    );
    // End of file: a forked reader waits, a spawned one sees it.
    assert!(
        run.stdout.contains(
            "fork: sent one, two, close: the reader got [\"one\", \"two\"], then nothing"
        )
    );
    assert!(run.stdout.contains(
        "spawn: sent one, two, close: the reader got [\"one\", \"two\"], then end of file"
    ));
    assert!(
        run.stdout
            .contains("a client with a wrong key: accept() -> Err(Auth):")
    );
}

#[test]
fn tour_start_methods_shows_each_method() {
    let run = brood(&["tour", "start-methods"], Duration::from_secs(60));
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("ok: start-methods went as expected"));
    for method in ["fork", "spawn", "forkserver", "forkserver, again"] {
        assert!(
            run.stdout.contains(&format!("| {method}: ")),
            "no timing for {method} in:\n{}",
            run.stdout
        );
    }
    // Alone, the topic is the first to use the forkserver, and starts it.
    assert!(run.stdout.contains("this call started the forkserver"));
    assert!(
        run.stdout
            .contains("brood::get_start_method() = forkserver")
    );
    assert!(run.stdout.contains(".start() -> Err(ForkWithThreads):"));
    assert!(run.stdout.contains("started with forkserver, found a = 1"));
    assert!(
        run.stdout
            .contains("::greet\" returned \"hello tour, hello tour (from pid")
    );
    assert!(
        run.stdout
            .contains("an unknown name: start() -> Err(UnknownTask):")
    );
}

/// The integers in `text`, in order (a leading `-` counts).
fn numbers_in(text: &str) -> Vec<i64> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() || (c == '-' && current.is_empty()) {
            current.push(c);
        } else {
            if let Ok(n) = current.parse() {
                out.push(n);
            }
            current.clear();
            if c == '-' {
                current.push(c);
            }
        }
    }
    out
}

#[test]
fn tour_shared_memory_keeps_the_balance_and_cleans_up() {
    let run = brood(&["tour", "shared-memory"], Duration::from_secs(60));
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("ok: shared-memory went as expected"));
    let lines = said(&run.stdout);
    // With the lock, the balance is exactly 5000 + deposits - withdrawals.
    let (_, _, locked) = lines
        .iter()
        .find(|(w, _, t)| w == "parent" && t.starts_with("with the lock: money.value = "))
        .unwrap_or_else(|| panic!("no balance line in:\n{}", run.stdout));
    let n = numbers_in(locked);
    // money.value = B (expected 5000 + D - W = E): exact, T ms
    assert!(n.len() >= 5, "{locked}");
    let (balance, opening, deposited, withdrawn, expected) = (n[0], n[1], n[2], n[3], n[4]);
    assert_eq!(opening, 5000, "{locked}");
    assert_eq!(opening + deposited - withdrawn, expected, "{locked}");
    assert_eq!(balance, expected, "{locked}");
    assert!(locked.contains("exact"), "{locked}");
    // Both racy runs say honestly whether updates were lost.
    let verdicts = run.stdout.matches("|   -> some updates were lost").count()
        + run
            .stdout
            .matches("|   -> no update was lost in this run")
            .count();
    assert_eq!(verdicts, 2, "{}", run.stdout);
    // The int arrays and the reference's b"hello" -> b"Hello".
    assert!(
        run.stdout
            .contains("after join: numbers = [10, 20, 30], squares = [0, 1, 4, 9, 16]")
    );
    assert!(
        run.stdout
            .contains("for i in shm: b'h' b'e' b'l' b'l' b'o'")
    );
    assert!(run.stdout.contains("shm.value = b'Hello'"));
    // The named segment is gone from /dev/shm.
    let (_, _, created) = lines
        .iter()
        .find(|(w, _, t)| w == "parent" && t.starts_with("SharedMemory::create(None, "))
        .unwrap_or_else(|| panic!("no segment line in:\n{}", run.stdout));
    let name = created
        .split('"')
        .nth(1)
        .unwrap_or_else(|| panic!("no name in {created:?}"));
    assert!(name.starts_with("brood_"), "{created}");
    assert!(
        !std::path::Path::new("/dev/shm").join(name).exists(),
        "/dev/shm/{name} was left behind"
    );
    assert!(
        run.stdout
            .contains(&format!("/dev/shm/{name} exists: false"))
    );
    // A holder killed with the lock: OwnerDied, the half-done data, clear_poison.
    assert!(run.stdout.contains("-> Err(OwnerDied) after"));
    assert!(run.stdout.contains("accounts = [600, 300], sum 900"));
    assert!(
        run.stdout
            .contains("lock.clear_poison(); is_poisoned() = false")
    );
}

#[test]
fn tour_semaphore_lets_at_most_three_run_at_once() {
    let run = brood(&["tour", "semaphore"], Duration::from_secs(60));
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("ok: semaphore went as expected"));
    // The timeline rows: `task I pid P |...| start S ms  end E ms  (R running)`.
    let mut spans = Vec::new();
    for l in run
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("task "))
    {
        let number_after = |key: &str| -> f64 {
            let rest = &l[l.find(key).unwrap_or_else(|| panic!("{key:?} in {l:?}")) + key.len()..];
            rest.split_whitespace().next().unwrap().parse().unwrap()
        };
        let (start, end) = (number_after(" start "), number_after(" end "));
        assert!(start < end, "{l}");
        spans.push((start, end));
    }
    assert_eq!(spans.len(), 6, "six tasks in:\n{}", run.stdout);
    // At no task's start were more than 3 tasks (itself included) running.
    // The times are rounded to 0.1 ms: an end and a start that round to
    // the same value do not overlap.
    for &(start, _) in &spans {
        let at_once = spans
            .iter()
            .filter(|&&(s, e)| s <= start && start < e)
            .count();
        assert!(
            at_once <= 3,
            "{at_once} tasks ran at {start} ms:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout
            .contains("tasks ran at the same time (the timeline)")
    );
    assert!(
        run.stdout
            .contains("release() once more -> Err(InvalidState)")
    );
    assert_eq!(run.stdout.matches("e.wait(10 s) -> true").count(), 3);
    for index in 0..4 {
        assert!(
            run.stdout.contains(&format!("wait() -> index {index}")),
            "index {index} in:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("-> Err(BrokenBarrier)"));
}

#[test]
fn tour_rejects_an_unknown_topic() {
    let run = brood(&["tour", "nosuch"], Duration::from_secs(30));
    assert!(!run.success);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("unknown topic `nosuch`"),
        "unclear message: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("zombie"),
        "the message lists the topics: {}",
        run.stderr
    );
    assert!(!run.stdout.contains("==="), "nothing runs: {}", run.stdout);
}

/// Kills (if needed) and reaps a forked child when dropped, so a failed
/// assertion leaves no zombie behind.
struct Reap(PidFd);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.send_signal(libc::SIGKILL);
        let _ = self.0.wait_timeout(Some(Duration::from_secs(10)));
        let _ = self.0.try_reap();
    }
}

#[test]
fn ps_tree_shows_a_zombie_made_on_purpose() {
    // SAFETY: the test harness runs other threads, so the child may only
    // call async-signal-safe functions: it calls _exit at once.
    let child = match unsafe { os::fork() }.expect("fork") {
        ForkResult::Child => os::exit_now(0),
        ForkResult::Parent { child } => child,
    };
    let fd = PidFd::open(child).expect("pidfd_open");
    let guard = Reap(fd);
    assert!(
        guard.0.wait_timeout(Some(Duration::from_secs(10))).unwrap(),
        "the child did not exit within 10 s"
    );
    // Exited, not reaped: a zombie, under this test process.
    let me = os::getpid().as_raw();
    let run = brood(&["ps", "--tree", &me.to_string()], Duration::from_secs(30));
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    let mine = row_of(&run.stdout, me).expect("the tree starts at the test process");
    assert_eq!(mine[1], me.to_string());
    let zombie = row_of(&run.stdout, child.as_raw())
        .unwrap_or_else(|| panic!("no row for the zombie {child} in:\n{}", run.stdout));
    assert_eq!(zombie[0], me.to_string(), "PPID column: {zombie:?}");
    assert!(zombie[5].starts_with('Z'), "STAT column: {zombie:?}");
    assert!(
        run.stdout
            .contains(&format!("<zombie: exited, not yet reaped by PPID {me}")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Z  zombie"), "legend: {}", run.stdout);
    // Reap it now, and see that it was what we made.
    assert_eq!(guard.0.try_reap().unwrap(), Some(ExitStatus::Exited(0)));
}

#[test]
fn ps_lists_the_test_process() {
    let me = os::getpid().as_raw();
    let run = brood(&["ps"], Duration::from_secs(30));
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with(" PPID    PID"), "{}", run.stdout);
    let row = row_of(&run.stdout, me)
        .unwrap_or_else(|| panic!("no row for the test process {me} in:\n{}", run.stdout));
    assert_eq!(row[0], os::getppid().as_raw().to_string());
    assert!(run.stdout.contains("STAT: the first letter"));
    assert!(
        run.stdout.contains("<orphan>: "),
        "the orphan rule is stated"
    );
}

#[test]
fn ps_rejects_a_missing_pid() {
    // Pids never exceed 2^22 on Linux.
    let run = brood(&["ps", "--tree", "99999999"], Duration::from_secs(30));
    assert!(!run.success);
    assert!(
        run.stderr.contains("no process with pid 99999999"),
        "{}",
        run.stderr
    );
}
