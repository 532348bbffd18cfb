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
    brood_env(args, &[], limit)
}

/// [`brood`] with extra environment variables.
fn brood_env(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Run {
    let (out_path, err_path) = (scratch("out"), scratch("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_brood"))
        .args(args)
        .envs(env.iter().copied())
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
        "pool",
        "pool-limits",
        "pipe",
        "queue",
        "shared-memory",
        "semaphore",
        "log",
        "events",
        "redis",
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
    // With backtraces asked for, as many developers' shells do.
    let run = brood_env(
        &["tour"],
        &[("RUST_BACKTRACE", "1")],
        Duration::from_secs(120),
    );
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
    // Whatever a child writes on its stderr is labelled with who wrote it
    // (the `exit` topic's child states its reason there): no backtrace.
    for l in run.stderr.lines() {
        assert!(
            said(l).len() == 1 && !l.contains("panicked"),
            "an unlabelled line on stderr: {l:?}\n{}",
            run.stderr
        );
    }
    assert!(
        run.stdout
            .contains(&format!("All {} topics went as expected", names.len()))
    );
    // Every topic names its section of the reference, prints the
    // reference's own words or Python (verbatim), Python, and the Rust.
    let text = format!("\n{}", run.stdout);
    let blocks: Vec<&str> = text.split("\n=== ").skip(1).collect();
    assert_eq!(blocks.len(), names.len(), "one block per topic");
    for (name, block) in names.iter().zip(&blocks) {
        let header = block.lines().next().unwrap();
        assert!(
            header.starts_with(&format!("{name}: §")),
            "the heading names the section: {header:?}"
        );
        for needle in ["  The reference, §", "    Python | ", "    Rust   | "] {
            assert!(
                block.contains(needle),
                "topic {name} shows no {needle:?}:\n{block}"
            );
        }
    }
    // The reference's strings, and the corrections the issue asked for.
    for needle in [
        "| 新进程创建成功",
        "| 原来的进程",
        "| 子进程事件 ",
        "| 管道2传给管道1的数据 肥水不流外人天",
        "| 一月余额: ",
        "| 执行任务.....执行完成",
        "| 第一件事情",
        "| 第二件事情",
        "| 退出原因: 退出",
        "never returns a negative",
        "prints twice",
        "无法使用ptint",
    ] {
        assert!(run.stdout.contains(needle), "no {needle:?} in the tour");
    }
    // 程序执行完毕 comes from both processes, as the correction says.
    let done: Vec<(String, i32, String)> = said(&run.stdout)
        .into_iter()
        .filter(|(_, _, t)| t == "程序执行完毕")
        .collect();
    assert_eq!(done.len(), 2, "{done:?}");
    assert_ne!(done[0].1, done[1].1, "printed by two processes: {done:?}");
    // A full tour ends by saying every section of the reference has a topic.
    assert!(
        run.stdout
            .contains("Every section of the reference tutorial has a topic")
    );
}

/// The sections of the reference tutorial, in order.
const SECTIONS: &[&str] = &[
    "§1", "§2", "§3", "§3.1", "§4.1", "§4.2", "§4.3", "§5", "§5.1", "§6", "§7.1", "§7.2", "§7.3",
    "§7.4",
];

/// The `§N` labels in `text` (a `§` followed by digits and dots).
fn sections_in(text: &str) -> Vec<String> {
    text.match_indices('§')
        .map(|(at, _)| {
            let rest = &text[at + '§'.len_utf8()..];
            let n: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            format!("§{}", n.trim_end_matches('.'))
        })
        .collect()
}

#[test]
fn tour_help_names_the_sections_not_covered() {
    let list = brood(&["tour", "--list"], Duration::from_secs(30));
    let covered = sections_in(&list.stdout);
    let help = brood(&["tour", "--help"], Duration::from_secs(30));
    assert!(help.success, "{}", help.stderr);
    let missing_part = help
        .stdout
        .split_once("Not in the tour yet")
        .map(|(_, after)| after)
        .unwrap_or("");
    let missing = sections_in(missing_part);
    for section in SECTIONS {
        let is_covered = covered.iter().any(|c| c == section);
        let is_missing = missing.iter().any(|m| m == section);
        assert!(
            is_covered != is_missing,
            "{section} must be either a topic's section (--list) or named missing in --help \
             (covered: {is_covered}, named missing: {is_missing}):\n{}\n{}",
            list.stdout,
            help.stdout
        );
    }
    // README says the same.
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let tour_part = readme
        .split_once("Run the tour")
        .map(|(_, after)| after.split("\n\n").take(3).collect::<Vec<_>>().join("\n\n"))
        .unwrap_or_default();
    for section in &missing {
        assert!(
            sections_in(&tour_part).contains(section),
            "README's tour paragraph should name {section} as missing:\n{tour_part}"
        );
    }
}

#[test]
fn tour_of_one_topic_says_topic() {
    let run = brood(&["tour", "pids"], Duration::from_secs(60));
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("\n1 topic went as expected"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("topics went"), "{}", run.stdout);
    let two = brood(&["tour", "pids", "zombie"], Duration::from_secs(60));
    assert!(
        two.stdout.contains("All 2 topics went as expected"),
        "{}",
        two.stdout
    );
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

#[test]
fn tour_queue_sums_the_pairs_and_joins_before_reading() {
    let run = brood(&["tour", "queue"], Duration::from_secs(60));
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    let sums = said(&run.stdout)
        .into_iter()
        .filter(|(who, _, text)| who == "handle" && text.contains(" = "))
        .count();
    assert_eq!(sums, 2, "the handler prints two sums:\n{}", run.stdout);
    assert!(run.stdout.contains("get_timeout(2 s) -> Timeout"));
    assert!(run.stdout.contains("nobody has read yet"));
    assert!(run.stdout.contains("intact: true"));
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
    let (_, fun1, got1) = find("fun1", "管道2传给管道1的数据 肥水不流外人天 ");
    let (_, fun2, got2) = find("fun2", "管道1传给管道2的数据 跟你说句悄悄话 ");
    assert_ne!(fun1, fun2, "two processes");
    assert_eq!(pid_named_in(&got1), Some(fun2), "{got1}");
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
    // Both unlocked balances are retried until an update is lost, so the
    // lesson shows: each ends with a loss, its balance off the expected one.
    assert_eq!(
        run.stdout.matches("|   -> some updates were lost").count(),
        2,
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("-> no update was lost"),
        "{}",
        run.stdout
    );
    let tries: Vec<&(String, i32, String)> = lines
        .iter()
        .filter(|(_, _, t)| t.starts_with("  try "))
        .collect();
    let lost = tries
        .iter()
        .filter(|(_, _, t)| {
            // try N, T each: money.value = B, expected E, off by D (M ms)
            let n = numbers_in(t);
            n.len() >= 5 && n[2] != n[3] && n[4] == n[2] - n[3]
        })
        .count();
    assert_eq!(lost, 2, "two tries that lost updates in:\n{}", run.stdout);
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
        .filter(|l| l.trim_start().starts_with("task ") && l.contains(" start "))
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
fn tour_process_labels_a_panic_and_keeps_the_backtrace_out() {
    for backtrace in ["1", "0"] {
        let run = brood_env(
            &["tour", "process"],
            &[("RUST_BACKTRACE", backtrace)],
            Duration::from_secs(60),
        );
        assert!(run.success, "{}\n{}", run.stdout, run.stderr);
        assert!(
            run.stderr.is_empty(),
            "nothing unlabelled on stderr (RUST_BACKTRACE={backtrace}): {}",
            run.stderr
        );
        // Backtrace frames look like `   3: std::panicking::...` and
        // `             at /rustc/.../src/panicking.rs:12:5`.
        for l in run.stdout.lines() {
            let t = l.trim_start();
            let frame = t
                .split_once(": ")
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            assert!(
                !frame && !t.starts_with("at /") && !t.starts_with("stack backtrace"),
                "a backtrace line in the tour (RUST_BACKTRACE={backtrace}): {l:?}"
            );
        }
        let labelled: Vec<(String, i32, String)> = said(&run.stdout)
            .into_iter()
            .filter(|(who, _, _)| who == "stderr")
            .collect();
        assert!(
            labelled.iter().any(|(_, _, t)| t.contains("panicked at"))
                && labelled.iter().any(|(_, _, t)| t == "no luck today"),
            "the child's stderr, labelled: {}",
            run.stdout
        );
        if backtrace == "1" {
            assert!(
                run.stdout
                    .contains("lines of backtrace, printed because RUST_BACKTRACE")
            );
        }
    }
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
        run.stdout.contains("<orphan?>: "),
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

/// Waits (at most 10 s) until `/proc/PID/cmdline` contains `needle`: the
/// child has exec'd.
fn wait_cmdline(pid: u32, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&raw).contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "{pid} never ran {needle:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn ps_prints_a_command_line_with_newlines_on_one_row() {
    // `read x` blocks on the pipe until the test closes it: the shell stays.
    let mut child = Command::new("sh")
        .args(["-c", "read x", "sh", "line one\nline two\tand a tab"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("cannot start sh");
    let pid = child.id();
    wait_cmdline(pid, "line one");
    let run = brood(&["ps", &pid.to_string()], Duration::from_secs(30));
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    let rows: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("line one") || l.contains("line two"))
        .collect();
    assert_eq!(rows.len(), 1, "one row for the shell:\n{}", run.stdout);
    assert!(
        rows[0].ends_with("sh -c read x sh line one line two and a tab"),
        "control characters print as spaces: {:?}",
        rows[0]
    );
    assert_eq!(row_of(&run.stdout, pid as i32).unwrap()[1], pid.to_string());
}

#[test]
fn ps_shows_the_l_flag_for_locked_pages() {
    let (mut fds, page) = ([0; 2], 4096usize);
    // SAFETY: `fds` is valid for pipe2 to fill.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the test harness runs other threads, so the child only makes
    // async-signal-safe calls (mlock, write, pause, _exit).
    let child = match unsafe { os::fork() }.expect("fork") {
        ForkResult::Child => {
            let buf = [1u8; 8192];
            // One page, well within the usual RLIMIT_MEMLOCK (64 KiB or more).
            // SAFETY: `buf` is valid for `page` bytes; mlock reads nothing.
            let rc = unsafe { libc::mlock(buf.as_ptr().cast(), page) };
            let err: i32 = if rc == 0 {
                0
            } else {
                // SAFETY: errno is this thread's, readable at any time.
                unsafe { *libc::__errno_location() }
            };
            // SAFETY: `err` is valid for 4 bytes of reads; pause and _exit
            // are async-signal-safe.
            unsafe {
                libc::write(fds[1], (&raw const err).cast(), 4);
                libc::pause();
                libc::_exit(std::hint::black_box(buf[0]) as i32 - 1);
            }
        }
        ForkResult::Parent { child } => child,
    };
    let _guard = Reap(PidFd::open(child).expect("pidfd_open"));
    // SAFETY: closes the parent's write end, which nothing else uses.
    unsafe { libc::close(fds[1]) };
    let mut err = 0i32;
    // SAFETY: `err` is valid for 4 bytes of writes; the read end is open.
    let n = unsafe { libc::read(fds[0], (&raw mut err).cast(), 4) };
    // SAFETY: closes the read end, which nothing else uses.
    unsafe { libc::close(fds[0]) };
    assert_eq!(n, 4, "the child did not report");
    let me = os::getpid().as_raw();
    let run = brood(&["ps", "--tree", &me.to_string()], Duration::from_secs(30));
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    let locked = row_of(&run.stdout, child.as_raw()).expect("a row for the child");
    let mine = row_of(&run.stdout, me).expect("a row for the test");
    assert!(!mine[5].contains('L'), "the test locked nothing: {mine:?}");
    let status = fs::read_to_string(format!("/proc/{child}/status")).unwrap();
    let vm_lck = status
        .lines()
        .find(|l| l.starts_with("VmLck:"))
        .unwrap_or("");
    if err == 0 {
        assert!(
            locked[5].contains('L'),
            "STAT of a child that mlock()ed: {locked:?}"
        );
        assert!(!vm_lck.ends_with(" 0 kB"), "{vm_lck}");
        assert!(
            run.stdout.contains("L  has pages locked into memory"),
            "the legend explains L:\n{}",
            run.stdout
        );
    } else {
        // mlock refused (RLIMIT_MEMLOCK below one page, and no
        // CAP_IPC_LOCK): then nothing is locked, and no L may show.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is valid for getrlimit to fill.
        unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
        assert!(
            (err == libc::EPERM || err == libc::ENOMEM) && (limit.rlim_cur as usize) < page,
            "mlock of one page failed with errno {err} though the limit is {}",
            limit.rlim_cur
        );
        assert!(!locked[5].contains('L'), "nothing was locked: {locked:?}");
        assert!(vm_lck.ends_with(" 0 kB"), "{vm_lck}");
    }
}

#[test]
fn brood_worker_and_redis_status_and_requeue_on_a_private_redis() {
    // Redis down: a clear error naming the URL, quickly.
    let down = brood(
        &["redis", "status", "redis://127.0.0.1:1/"],
        Duration::from_secs(30),
    );
    assert!(!down.success);
    assert!(
        down.stderr
            .contains("cannot reach Redis at redis://127.0.0.1:1/"),
        "{}",
        down.stderr
    );
    let down = brood(
        &["worker", "--redis", "redis://127.0.0.1:1/", "--name", "x"],
        Duration::from_secs(30),
    );
    assert!(!down.success);
    assert!(
        down.stderr.contains("cannot reach Redis"),
        "{}",
        down.stderr
    );

    let server = brood_redis::LocalServer::start().expect("redis-server");
    let url = server.url();
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_brood"))
        .args([
            "worker",
            "--redis",
            &url,
            "--name",
            "cli",
            "--processes",
            "1",
        ])
        .args(["--lease", "1", "--max-deliveries", "1", "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pool = brood_redis::RedisPool::connect(&url, "cli").unwrap();
    let v: u64 = pool.apply("brood::redis::square", (9u64,)).unwrap();
    assert_eq!(v, 81);
    let err = pool
        .apply::<u64, _>("brood::redis::crash", (0u64,))
        .unwrap_err();
    assert_eq!(err.kind(), brood_redis::ErrorKind::DeadLetter, "{err}");
    let status = brood(&["redis", "status", &url, "cli"], Duration::from_secs(30));
    assert!(status.success, "{}", status.stderr);
    for needle in [
        "pool \"cli\"",
        "dead letters 1",
        "heartbeat",
        "brood::redis::crash",
    ] {
        assert!(
            status.stdout.contains(needle),
            "{needle}: {}",
            status.stdout
        );
    }
    let requeue = brood(&["redis", "requeue", &url, "cli"], Duration::from_secs(30));
    assert!(requeue.success, "{}", requeue.stderr);
    assert!(
        requeue.stdout.contains("moved 1 dead letter"),
        "{}",
        requeue.stdout
    );
    let _ = worker.kill();
    let _ = worker.wait();
}
