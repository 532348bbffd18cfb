//! Shared memory: Python's `multiprocessing.Value`, `Array` and
//! `shared_memory.SharedMemory`. The reference's monthly balance with and
//! without the lock, arrays a child fills, a named segment a Python process
//! reads, and a lock whose holder is killed.

use std::fmt::{Display, Write as _};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use brood::shm::{Array, RawArray, RawValue, SharedMemory, Value};
use brood::sync::{Event, Lock, TryLockError};
use brood::{Process, os};
use serde::{Deserialize, Serialize};

use super::kit::{self, BOUND, Guarded, code, explain, line, python};
use super::reference;

/// What a child hands back: its value, or the text of the error that
/// stopped it.
type Answer<T> = std::result::Result<T, String>;

/// An error's text, for an [`Answer`].
fn text(e: impl Display) -> String {
    e.to_string()
}

/// The balance at the start of the month (the reference's `Value('i', 5000)`).
const OPENING: i32 = 5000;

/// How many deposits, and how many withdrawals, a month has. The reference
/// has 30 of each (the man's 0.2 s apart, the girl's 0.15 s apart); the
/// tour does many, back to back, so that the two processes really collide.
const TIMES: u32 = 20_000;

/// A clerk gives the CPU away (`sched_yield`) between reading and writing
/// the balance once every this many updates.
const YIELD_EVERY: usize = 1000;

/// How many months the unlocked balance is tried, each twice as long as
/// the one before, until an update is lost.
const RACE_ATTEMPTS: u32 = 6;

/// Who changes the balance: the reference's `man` deposits, `girl`
/// withdraws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Clerk {
    /// Deposits `randint(1, 1000)`.
    Man,
    /// Withdraws `randint(100, 800)`.
    Girl,
}

impl Clerk {
    /// Its name, as the process is called.
    fn name(self) -> &'static str {
        match self {
            Clerk::Man => "man",
            Clerk::Girl => "girl",
        }
    }

    /// +1 for a deposit, -1 for a withdrawal.
    fn sign(self) -> i32 {
        match self {
            Clerk::Man => 1,
            Clerk::Girl => -1,
        }
    }

    /// The `times` amounts it moves, in order: the reference's
    /// `randint(1, 1000)` and `randint(100, 800)`, drawn from a generator
    /// with a fixed seed, so that the tour knows the exact expected balance
    /// (and it is the same in every run).
    fn amounts(self, times: u32) -> impl Iterator<Item = i32> {
        let (mut x, low, high): (u64, i32, i32) = match self {
            Clerk::Man => (1, 1, 1000),
            Clerk::Girl => (2, 100, 800),
        };
        let span = (high - low + 1) as u64;
        (0..times).map(move |_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            low + ((x >> 33) % span) as i32
        })
    }

    /// The sum of its `times` amounts.
    fn total(self, times: u32) -> i64 {
        self.amounts(times).map(i64::from).sum()
    }
}

/// The shared balance, and how a clerk changes it.
#[derive(Clone, Serialize, Deserialize)]
enum Account {
    /// `with money.get_lock(): money.value += x`: `*money.lock() += x`.
    Locked(Value<i32>),
    /// The reference's `money.value += x`: a read under the lock, then a
    /// write under the lock, with a gap between them.
    GetSet(Value<i32>),
    /// A `RawValue`: no lock at all.
    Raw(RawValue<i32>),
}

impl Account {
    /// The balance now.
    fn read(&self) -> Result<i32> {
        Ok(match self {
            Account::Locked(v) | Account::GetSet(v) => v.get()?,
            Account::Raw(v) => v.get(),
        })
    }
}

/// The reference's `man` and `girl`: waits for the go, then moves the
/// `times` amounts of `clerk` in or out of `account`. Returns the sum it
/// moved.
fn clerk((account, clerk, go, times): (Account, Clerk, Event, u32)) -> Answer<i64> {
    if !go.wait(Some(BOUND)) {
        return Err(format!("no go within {BOUND:?}"));
    }
    let sign = clerk.sign();
    let mut moved = 0i64;
    for (i, amount) in clerk.amounts(times).enumerate() {
        let delta = sign * amount;
        // Now and then, give the CPU away between the read and the write,
        // as a busy machine would at any moment: then the other clerk runs
        // in the gap even when the two share one core.
        let gap = || {
            if i % YIELD_EVERY == YIELD_EVERY - 1 {
                std::thread::yield_now();
            }
        };
        match &account {
            Account::Locked(money) => {
                let mut balance = money.lock().map_err(text)?;
                let now = *balance;
                gap();
                *balance = now + delta;
            }
            Account::GetSet(money) => {
                let now = money.get().map_err(text)?;
                gap();
                money.set(now + delta).map_err(text)?;
            }
            Account::Raw(money) => {
                let now = money.get();
                gap();
                money.set(now + delta);
            }
        }
        moved += i64::from(amount);
    }
    Ok(moved)
}

/// What one month left behind.
struct Month {
    /// The balance at the end.
    balance: i32,
    /// How long the two clerks took, from the go.
    took: Duration,
}

/// Runs the man and the girl against `account`, `times` amounts each, at
/// the same moment (they wait for one go), and reads the balance they leave.
fn month(account: &Account, times: u32) -> Result<Month> {
    let go = Event::new()?;
    let mut clerks = Vec::new();
    for who in [Clerk::Man, Clerk::Girl] {
        let mut p = Guarded(
            Process::builder()
                .name(who.name())
                .target_with(clerk, (account.clone(), who, go.clone(), times)),
        );
        kit::flush();
        p.start()?;
        clerks.push((who, p));
    }
    let t0 = Instant::now();
    go.set();
    for (who, p) in &mut clerks {
        let moved = p.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?;
        ensure!(
            moved == who.total(times),
            "the {} says it moved {moved}, its amounts sum to {}",
            who.name(),
            who.total(times)
        );
    }
    let took = t0.elapsed();
    Ok(Month {
        balance: account.read()?,
        took,
    })
}

/// Milliseconds, with a decimal.
fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// The reference's monthly balance, with the lock and without.
fn balance() -> Result<()> {
    explain(
        "Value('i', 5000) puts one C int in shared memory: every process that has it \
         reads and writes the same four bytes, where a plain variable would be copied \
         into each child. In the reference, a man deposits 30 times, 0.2 s apart, and a \
         girl withdraws 30 times, 0.15 s apart, each in its own process.",
    );
    kit::reference("§7.3", reference::VALUE);
    kit::correction(
        "money.value += randint(1, 1000) is not one step: it reads the value, then writes \
         the sum, taking the value's lock for each step but not across both. When the other \
         process updates the balance in between, that update is overwritten: lost (shown \
         below). The fix is `with money.get_lock(): money.value += ...`. And the balance \
         it states, 4264, is one outcome among many: randint draws other amounts each run.",
    );
    explain(
        "Here each clerk moves 20000 amounts back to back, both starting at the same \
         moment, with the reference's amounts (randint) drawn from a fixed seed, so the \
         exact balance to expect is known: 5000 + all deposits - all withdrawals. Once \
         every 1000 updates a clerk gives the CPU away between its read and its write \
         (std::thread::yield_now), as a busy machine may make it do at any moment, so the \
         other clerk can run in the gap even when both share one core. First with the \
         lock held across each update:",
    );
    python(
        "money = Value('i', 5000)\n\
         def man():\n\
         \x20   for i in range(20000):\n\
         \x20       with money.get_lock():              # the lock, held for the whole +=\n\
         \x20           money.value += randint(1, 1000)\n\
         def girl():\n\
         \x20   for i in range(20000):\n\
         \x20       with money.get_lock():\n\
         \x20           money.value -= randint(100, 800)\n\
         m = Process(target=man); g = Process(target=girl)\n\
         m.start(); g.start(); m.join(); g.join()\n\
         print(\"一月余额:\", money.value)",
    );
    kit::rust(
        "let money = Value::with_typecode('i', 5000)?;      // Value('i', 5000): a Value<i32>\n\
         fn clerk((money, clerk, ..): (Value<i32>, Clerk, ..)) {\n\
         \x20   for amount in clerk.amounts() {\n\
         \x20       *money.lock()? += clerk.sign() * amount;   // the guard holds the lock\n\
         \x20       // the reference's unlocked +=: money.set(money.get()? + amount)?\n\
         \x20   }\n\
         }\n\
         let mut m = Process::builder().name(\"man\").target_with(clerk, (money.clone(), Clerk::Man, ..));\n\
         let mut g = Process::builder().name(\"girl\").target_with(clerk, (money.clone(), Clerk::Girl, ..));\n\
         m.start()?; g.start()?; m.join()?; g.join()?;\n\
         println!(\"一月余额: {}\", money.get()?);",
    );
    let deposited = Clerk::Man.total(TIMES);
    let withdrawn = Clerk::Girl.total(TIMES);
    let expected = i64::from(OPENING) + deposited - withdrawn;
    let expected = i32::try_from(expected).context("the expected balance fits an int")?;

    let money = Value::with_typecode('i', OPENING)?;
    let locked = month(&Account::Locked(money.clone()), TIMES)?;
    line(
        "parent",
        format!(
            "with the lock: money.value = {} (expected {OPENING} + {deposited} - {withdrawn} \
             = {expected}): exact, {} ms",
            locked.balance,
            ms(locked.took)
        ),
    );
    line("parent", format!("一月余额: {}", locked.balance));
    ensure!(
        locked.balance == expected,
        "with the lock the balance should be exactly {expected}, is {}",
        locked.balance
    );
    ensure!(!money.get_lock().is_poisoned(), "nobody died holding it");
    println!();

    explain(
        "The reference writes money.value += randint(1, 1000) without get_lock(). Each \
         .value read and each .value write takes the lock, but += is a read, then a write: \
         between the two, the other process can complete a whole update, which the write \
         then overwrites. That update is lost. brood's value.get() then value.set() is the \
         same two steps; a RawValue (Python's RawValue) has no lock at all. (With the \
         reference's 0.2 s sleeps a collision is rare, not impossible.)",
    );
    python(
        "money.value += randint(1, 1000)     # read under the lock, then write under the lock\n\
         raw = RawValue('i', 5000)           # no lock at all",
    );
    type Fresh = fn() -> Result<Account>;
    let racy: [(&str, Fresh); 2] = [
        ("get() then set(), the reference's money.value += x", || {
            Ok(Account::GetSet(Value::with_typecode('i', OPENING)?))
        }),
        ("RawValue, no lock at all", || {
            Ok(Account::Raw(RawValue::with_typecode('i', OPENING)?))
        }),
    ];
    for (label, fresh) in racy {
        line("parent", format!("{label}:"));
        race(fresh)?;
    }
    println!();
    Ok(())
}

/// Runs unlocked months, each twice as long as the one before, until one
/// loses an update (at most [`RACE_ATTEMPTS`]); says what each left.
fn race(fresh: fn() -> Result<Account>) -> Result<()> {
    let mut times = TIMES;
    for attempt in 1..=RACE_ATTEMPTS {
        let expected = i64::from(OPENING) + Clerk::Man.total(times) - Clerk::Girl.total(times);
        let m = month(&fresh()?, times)?;
        let off = i64::from(m.balance) - expected;
        line(
            "parent",
            format!(
                "  try {attempt}, {times} each: money.value = {}, expected {expected}, off by \
                 {off} ({} ms)",
                m.balance,
                ms(m.took)
            ),
        );
        if off != 0 {
            line(
                "parent",
                "  -> some updates were lost: another process's update, overwritten",
            );
            return Ok(());
        }
        times *= 2;
    }
    line(
        "parent",
        format!(
            "  -> no update was lost in {RACE_ATTEMPTS} tries: the race is there, it did not \
             strike (on a busy machine the two clerks may never run at the same instant)"
        ),
    );
    Ok(())
}

/// Fills `numbers` (times ten) and `squares` (i * i) under their locks.
fn fill((numbers, squares): (Array<i32>, Array<i32>)) -> Answer<(Vec<i32>, Vec<i32>)> {
    let mut n = numbers.lock().map_err(text)?;
    for x in n.iter_mut() {
        *x *= 10;
    }
    let mut s = squares.lock().map_err(text)?;
    for (i, x) in s.iter_mut().enumerate() {
        *x = (i * i) as i32;
    }
    line(
        "child",
        format!(
            "numbers[i] *= 10 -> {:?}; squares[i] = i * i -> {:?}",
            &*n, &*s
        ),
    );
    Ok((n.to_vec(), s.to_vec()))
}

/// `Array('i', [1, 2, 3])` and `Array('i', 5)`, filled by a child.
fn int_arrays() -> Result<()> {
    explain(
        "Array(typecode, list) puts a list of C values in shared memory, all of one type; \
         Array(typecode, n) makes n zeroes. A child changes the elements, the parent sees \
         the change. array.lock() takes the array's lock and hands back the elements as a \
         mutable slice; get(i), set(i, x) and to_vec() take it for one access.",
    );
    python(
        "numbers = Array('i', [1, 2, 3]); squares = Array('i', 5)\n\
         def fill():\n\
         \x20   with numbers.get_lock():\n\
         \x20       for i in range(len(numbers)): numbers[i] *= 10\n\
         \x20   for i in range(len(squares)): squares[i] = i * i\n\
         p = Process(target=fill); p.start(); p.join()\n\
         print(numbers[:], squares[:])      # [10, 20, 30] [0, 1, 4, 9, 16]",
    );
    let numbers = Array::with_typecode('i', &[1i32, 2, 3])?;
    let squares = Array::<i32>::zeroed(5)?;
    line(
        "parent",
        format!(
            "Array::with_typecode('i', &[1, 2, 3]) -> {:?}; Array::<i32>::zeroed(5) -> {:?}",
            numbers.to_vec()?,
            squares.to_vec()?
        ),
    );
    let wrong = Array::with_typecode('d', &[1i32])
        .err()
        .context("typecode 'd' for i32 should be refused")?;
    line(
        "parent",
        format!("Array::with_typecode('d', &[1i32]) -> Err: {wrong}"),
    );
    let mut p = Guarded(
        Process::builder()
            .name("fill")
            .target_with(fill, (numbers.clone(), squares.clone())),
    );
    kit::flush();
    p.start()?;
    let (theirs_n, theirs_s) = p.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?;
    let (ours_n, ours_s) = (numbers.to_vec()?, squares.to_vec()?);
    line(
        "parent",
        format!("after join: numbers = {ours_n:?}, squares = {ours_s:?}: the child's writes"),
    );
    ensure!(
        ours_n == [10, 20, 30] && ours_s == [0, 1, 4, 9, 16],
        "the parent should see the child's arrays, sees {ours_n:?} {ours_s:?}"
    );
    ensure!(
        ours_n == theirs_n && ours_s == theirs_s,
        "the child left {theirs_n:?} {theirs_s:?}, the parent sees {ours_n:?} {ours_s:?}"
    );
    println!();
    Ok(())
}

/// Bytes as Python prints them: `b'Hello'`.
fn py_bytes(bytes: &[u8]) -> String {
    let mut out = String::from("b'");
    for &b in bytes {
        match b {
            b'\'' => out.push_str("\\'"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('\'');
    out
}

/// The reference's `Array('c', b"hello")`: a child capitalizes it.
fn byte_array() -> Result<()> {
    explain(
        "Array('c', b\"hello\") holds one byte per element. In the reference, the child \
         iterates over it, then sets shm[0] = b'H', and the parent then prints b'Hello'. \
         The reference's fun() uses the global shm; the Rust closure captures a clone of \
         the Array, and Process::fork runs it in a forked child, which shares the array's \
         memory with the tour.",
    );
    kit::reference("§7.3", reference::ARRAY);
    kit::rust(
        "let shm = Array::with_typecode('c', &b\"hello\"[..])?;   // Array('c', b\"hello\")\n\
         let theirs = shm.clone();\n\
         let mut p = Process::builder().name(\"fun\").fork(move || {\n\
         \x20   for i in theirs.to_vec()? { println!(\"{}\", py_bytes(&[i])); }   // b'h' ...\n\
         \x20   theirs.set(0, b'H')?;                           // shm[0] = b'H'\n\
         });\n\
         p.start()?; p.join()?;\n\
         println!(\"{}\", py_bytes(&shm.to_vec()?));            // b'Hello'",
    );
    let shm = Array::with_typecode('c', &b"hello"[..])?;
    let theirs = shm.clone();
    let mut p = Guarded(
        Process::builder()
            .name("fun")
            .fork(move || -> Answer<Vec<u8>> {
                let seen = theirs.to_vec().map_err(text)?;
                let each: Vec<String> = seen.iter().map(|b| py_bytes(&[*b])).collect();
                line("fun", format!("for i in shm: {}", each.join(" ")));
                theirs.set(0, b'H').map_err(text)?;
                line("fun", "shm[0] = b'H'");
                Ok(seen)
            }),
    );
    kit::flush();
    p.start()?;
    let seen = p.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?;
    ensure!(seen == b"hello", "the child saw {}", py_bytes(&seen));
    let now = shm.to_vec()?;
    let each: Vec<String> = now.iter().map(|b| py_bytes(&[*b])).collect();
    line("parent", format!("for i in shm: {}", each.join(" ")));
    line("parent", format!("shm.value = {}", py_bytes(&now)));
    ensure!(now == b"Hello", "expected b'Hello', got {}", py_bytes(&now));
    println!();
    Ok(())
}

/// A named segment the tour unlinks, even on an early error.
struct Named {
    /// The segment.
    shm: SharedMemory,
    /// Whether it was unlinked already.
    unlinked: bool,
}

impl Named {
    /// Unlinks the segment's name.
    fn unlink(&mut self) -> Result<()> {
        self.shm.unlink()?;
        self.unlinked = true;
        Ok(())
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        if !self.unlinked {
            let _ = self.shm.unlink();
        }
    }
}

/// Where the reply from Python goes in the segment.
const REPLY_AT: usize = 128;

/// The segment's size.
const SEGMENT: usize = 256;

/// A brood child: receives the segment by name, writes a greeting at 0.
fn write_greeting(shm: SharedMemory) -> Answer<String> {
    let greeting = format!("hello from brood pid {}", os::getpid());
    shm.write_at(0, greeting.as_bytes()).map_err(text)?;
    line(
        "writer",
        format!(
            "attached to {:?} by its name, wrote {greeting:?} at offset 0",
            shm.name().unwrap_or("?")
        ),
    );
    Ok(greeting)
}

/// The Python side: attaches by name, prints what it read, writes a reply.
const PY_READER: &str = r#"
import os, sys
try:
    from multiprocessing import resource_tracker, shared_memory
except ImportError as e:
    print("SKIP", e)
    sys.exit(0)
name = sys.argv[1]
try:
    shm = shared_memory.SharedMemory(name=name, track=False)   # Python 3.13+
except TypeError:
    # Before 3.13, attaching registers the segment with Python's resource
    # tracker (a process it starts), which unlinks it when this process
    # exits, under the feet of its creator: skip the registration.
    resource_tracker.register = lambda name, rtype: None
    shm = shared_memory.SharedMemory(name=name)
text = bytes(shm.buf[:128]).split(b"\0")[0].decode()
print(f"  {'python':>10} {os.getpid():>7} | SharedMemory(name={name!r}): read {text!r}, size {shm.size}")
reply = f"hello back from python pid {os.getpid()}".encode()
shm.buf[128:128 + len(reply)] = reply
print(f"  {'python':>10} {os.getpid():>7} | wrote {reply!r} at offset 128; shm.close()")
shm.close()
"#;

/// The first executable `python3` on `PATH`.
fn find_python() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("python3"))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// What a Python run printed, and how it ended.
struct PyRun {
    /// Its pid.
    pid: u32,
    /// Whether it exited with status 0.
    success: bool,
    /// Its stdout.
    stdout: String,
    /// Its stderr.
    stderr: String,
}

/// Runs `python -c script args`, killing it if it runs past [`BOUND`]; it
/// is reaped in every case.
fn run_python(python: &Path, script: &str, args: &[&str]) -> Result<PyRun> {
    kit::flush();
    let mut child = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", python.display()))?;
    let deadline = Instant::now() + BOUND;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                match other {
                    Err(e) => return Err(e).context("waiting for python3 failed"),
                    _ => bail!("python3 still ran after {BOUND:?}: killed"),
                }
            }
        }
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout)?;
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr)?;
    }
    Ok(PyRun {
        pid: child.id(),
        success: status.success(),
        stdout,
        stderr,
    })
}

/// The text at `offset`, up to the first NUL.
fn text_at(shm: &SharedMemory, offset: usize, len: usize) -> Result<String> {
    let mut buf = vec![0u8; len];
    shm.read_at(offset, &mut buf)?;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(len);
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// A named `SharedMemory` segment: a brood child and a Python process
/// attach to it by name; then it is unlinked.
fn named_segment() -> Result<()> {
    explain(
        "Value and Array live in anonymous memory (a memfd): only processes that were \
         handed it can reach it, and it is gone with the last of them. \
         multiprocessing.shared_memory.SharedMemory has a name in /dev/shm instead: any \
         process that knows the name can attach, a Python one included. A named segment \
         outlives every process until someone unlinks it; brood's resource tracker \
         unlinks one brood created once no brood process uses it any more, even after a \
         SIGKILL, but the tour unlinks it itself, as Python's unlink() does.",
    );
    python(
        "shm = SharedMemory(create=True, size=256)          # a random name, like brood_ab12cd34\n\
         shm.buf[:n] = b\"hello ...\"                          # a child, or any process:\n\
         other = SharedMemory(name=shm.name)                # attach by name, read other.buf\n\
         other.close(); shm.close(); shm.unlink()",
    );
    let mut named = Named {
        shm: SharedMemory::create(None, SEGMENT)?,
        unlinked: false,
    };
    let name = named
        .shm
        .name()
        .context("a named segment has a name")?
        .to_string();
    let path = Path::new("/dev/shm").join(&name);
    let mode = std::fs::metadata(&path)
        .with_context(|| format!("{} should exist", path.display()))?
        .permissions()
        .mode();
    line(
        "parent",
        format!(
            "SharedMemory::create(None, {SEGMENT}) -> name {name:?}: {} exists, mode {:o}, \
             tracked: {}",
            path.display(),
            mode & 0o777,
            named.shm.is_tracked()
        ),
    );
    let mut writer = Guarded(
        Process::builder()
            .name("writer")
            .target_with(write_greeting, named.shm.clone()),
    );
    kit::flush();
    writer.start()?;
    let greeting = writer.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?;
    let read = text_at(&named.shm, 0, REPLY_AT)?;
    line("parent", format!("the tour reads {read:?} at offset 0"));
    ensure!(
        read == greeting,
        "the writer wrote {greeting:?}, the tour reads {read:?}"
    );
    match find_python() {
        None => line(
            "parent",
            "no python3 on PATH: skipping the part where Python attaches by name",
        ),
        Some(py) => {
            line(
                "parent",
                format!("running {} -c '...' {name}", py.display()),
            );
            let run = run_python(&py, PY_READER, &[&name])?;
            print!("{}", run.stdout);
            for l in run.stderr.lines() {
                line("python", format!("(stderr) {l}"));
            }
            if let Some(why) = run.stdout.strip_prefix("SKIP ") {
                line(
                    "parent",
                    format!(
                        "this python3 has no multiprocessing.shared_memory (3.8+): {}",
                        why.trim()
                    ),
                );
            } else {
                ensure!(run.success, "python3 failed:\n{}{}", run.stdout, run.stderr);
                let reply = text_at(&named.shm, REPLY_AT, SEGMENT - REPLY_AT)?;
                line(
                    "parent",
                    format!("the tour reads {reply:?} at offset {REPLY_AT}"),
                );
                ensure!(
                    reply == format!("hello back from python pid {}", run.pid),
                    "python3 ({}) should have written its reply, the segment holds {reply:?}",
                    run.pid
                );
                ensure!(
                    run.stdout.contains(&greeting),
                    "python3 should have read {greeting:?}"
                );
            }
        }
    }
    named.unlink()?;
    let gone = !path.exists();
    let reopen = SharedMemory::open(&name);
    line(
        "parent",
        format!(
            "shm.unlink(): {} exists: {}; SharedMemory::open({name:?}) -> {}",
            path.display(),
            !gone,
            match &reopen {
                Ok(_) => "Ok (still there!)".to_string(),
                Err(e) => format!("Err: {e}"),
            }
        ),
    );
    ensure!(gone && reopen.is_err(), "{} should be gone", path.display());
    let still = named.shm.to_vec();
    line(
        "parent",
        format!(
            "the tour's mapping still works ({} bytes): unlink removes the name, not the memory",
            still.len()
        ),
    );
    println!();
    Ok(())
}

/// Takes the lock, does half of a transfer between two accounts, signals
/// `halfway`, and sleeps (the tour kills it there).
fn transfer((lock, accounts, halfway): (Lock, RawArray<i32>, Event)) -> Answer<()> {
    let _held = lock.lock().map_err(text)?;
    let from = accounts.get(0).map_err(text)?;
    accounts.set(0, from - 100).map_err(text)?;
    line(
        "transfer",
        "took the lock; accounts[0] -= 100 done, accounts[1] += 100 not yet",
    );
    halfway.set();
    std::thread::sleep(BOUND);
    let to = accounts.get(1).map_err(text)?;
    accounts.set(1, to + 100).map_err(text)?;
    Ok(())
}

/// A holder killed while holding a `Lock`: the next acquirer is told.
fn holder_death() -> Result<()> {
    explain(
        "What if a process dies while it holds the lock? Python's Lock is a POSIX \
         semaphore: it stays taken for ever, and the next acquire() blocks for ever (with \
         a timeout, it returns False, and nothing says why). brood's Lock is a robust \
         mutex: when the holder dies, the kernel hands the lock to the next acquirer \
         together with an OwnerDied report (like a poisoned std Mutex). The data may be \
         half updated: read it, repair it, then clear_poison().",
    );
    python(
        "lock = Lock(); accounts = RawArray('i', [700, 300])\n\
         # a child takes the lock, moves 100 out of accounts[0], and is killed\n\
         lock.acquire()            # blocks for ever",
    );
    code(
        "Rust",
        "match lock.lock_timeout(BOUND) {\n\
         \x20   Err(TryLockError::OwnerDied(died)) => { /* repair */ lock.clear_poison(); died.into_inner() }\n\
         \x20   ..\n\
         }",
    );
    let lock = Lock::new()?;
    let accounts = RawArray::with_typecode('i', &[700i32, 300])?;
    let halfway = Event::new()?;
    let mut p = Guarded(
        Process::builder()
            .name("transfer")
            .target_with(transfer, (lock.clone(), accounts.clone(), halfway.clone())),
    );
    kit::flush();
    p.start()?;
    ensure!(
        halfway.wait(Some(BOUND)),
        "the transfer did not get halfway within {BOUND:?}"
    );
    let busy = matches!(lock.try_lock(), Err(TryLockError::WouldBlock));
    line(
        "parent",
        format!("lock.try_lock() -> WouldBlock: {busy} (the transfer holds it)"),
    );
    ensure!(busy, "the lock should be held by the transfer");
    let pid = p.pid().context("a started process has a pid")?;
    p.kill()?;
    match p.join_timeout(BOUND) {
        Ok(v) => bail!("the killed transfer returned {v:?}"),
        Err(e) => {
            ensure!(
                e.signal() == Some(libc::SIGKILL),
                "expected death by SIGKILL: {e}"
            );
            line(
                "parent",
                format!("kill() the transfer ({pid}) while it holds the lock"),
            );
        }
    }
    let t0 = Instant::now();
    let guard = match lock.lock_timeout(BOUND) {
        Err(TryLockError::OwnerDied(died)) => {
            line(
                "parent",
                format!(
                    "lock.lock_timeout({BOUND:?}) -> Err(OwnerDied) after {} ms: the lock is \
                     ours, is_poisoned() = {}",
                    ms(t0.elapsed()),
                    lock.is_poisoned()
                ),
            );
            died.into_inner()
        }
        Err(TryLockError::WouldBlock) => {
            bail!("the dead holder's lock was still taken after {BOUND:?}")
        }
        Ok(_) => bail!("the lock should report that its holder died"),
    };
    let seen = accounts.to_vec();
    let sum: i32 = seen.iter().sum();
    line(
        "parent",
        format!("accounts = {seen:?}, sum {sum}, not 1000: the transfer was cut in half"),
    );
    ensure!(
        seen == [600, 300],
        "the transfer should have done half of its work, accounts = {seen:?}"
    );
    accounts.set(1, seen[1] + 100)?;
    lock.clear_poison();
    drop(guard);
    line(
        "parent",
        format!(
            "repaired: accounts = {:?}; lock.clear_poison(); is_poisoned() = {}",
            accounts.to_vec(),
            lock.is_poisoned()
        ),
    );
    ensure!(!lock.is_poisoned(), "clear_poison should clear it");
    match lock.try_lock() {
        Ok(_) => line("parent", "lock.try_lock() -> Ok: a plain lock again"),
        Err(e) => bail!("after clear_poison, try_lock should succeed: {e}"),
    }
    Ok(())
}

/// The reference's Value and Array examples, a named segment shared with
/// Python, and a lock whose holder is killed.
pub(crate) fn run() -> Result<()> {
    balance()?;
    int_arrays()?;
    byte_array()?;
    named_segment()?;
    holder_death()?;
    ensure!(
        brood::active_children().is_empty(),
        "every child should be joined"
    );
    Ok(())
}
