//! A `/proc` reader: the process table as `ps` and `pstree` show it.
//!
//! ```
//! use brood::os::{self, proc::ProcInfo};
//!
//! let me = ProcInfo::read(os::getpid()).unwrap();
//! assert_eq!(me.pid, os::getpid());
//! assert_eq!(me.ppid, os::getppid().as_raw());
//! assert!(me.threads >= 1);
//! println!("{} {} {}", me.pid, me.stat(), me.name);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Pid;

/// The scheduler state of a process: the first letter of `ps`'s STAT column.
///
/// ```
/// use brood::os::ProcState;
/// assert_eq!(ProcState::from_letter('Z'), ProcState::Zombie);
/// assert_eq!(ProcState::Zombie.letter(), 'Z');
/// assert!(ProcState::Zombie.meaning().contains("zombie"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcState {
    /// `R`: running or runnable (on a run queue).
    Running,
    /// `S`: interruptible sleep, waiting for an event.
    Sleeping,
    /// `D`: uninterruptible sleep, usually I/O.
    DiskSleep,
    /// `T`: stopped by a job-control signal.
    Stopped,
    /// `t`: stopped by a debugger during tracing.
    TracingStop,
    /// `Z`: zombie — exited, but not yet reaped by its parent.
    Zombie,
    /// `X`: dead, being torn down (should never be seen).
    Dead,
    /// `I`: idle kernel thread.
    Idle,
    /// `P`: parked kernel thread.
    Parked,
    /// Any other letter a future kernel may report.
    Other(char),
}

impl ProcState {
    /// Decodes a state letter from `/proc/PID/stat`.
    ///
    /// ```
    /// assert_eq!(brood::os::ProcState::from_letter('R'), brood::os::ProcState::Running);
    /// ```
    pub fn from_letter(letter: char) -> ProcState {
        match letter {
            'R' => ProcState::Running,
            'S' => ProcState::Sleeping,
            'D' => ProcState::DiskSleep,
            'T' => ProcState::Stopped,
            't' => ProcState::TracingStop,
            'Z' => ProcState::Zombie,
            'X' | 'x' => ProcState::Dead,
            'I' => ProcState::Idle,
            'P' => ProcState::Parked,
            other => ProcState::Other(other),
        }
    }

    /// The letter `ps` shows.
    ///
    /// ```
    /// assert_eq!(brood::os::ProcState::Sleeping.letter(), 'S');
    /// ```
    pub fn letter(self) -> char {
        match self {
            ProcState::Running => 'R',
            ProcState::Sleeping => 'S',
            ProcState::DiskSleep => 'D',
            ProcState::Stopped => 'T',
            ProcState::TracingStop => 't',
            ProcState::Zombie => 'Z',
            ProcState::Dead => 'X',
            ProcState::Idle => 'I',
            ProcState::Parked => 'P',
            ProcState::Other(c) => c,
        }
    }

    /// What the letter means, in words.
    ///
    /// ```
    /// assert_eq!(brood::os::ProcState::Running.meaning(), "running or runnable");
    /// ```
    pub fn meaning(self) -> &'static str {
        match self {
            ProcState::Running => "running or runnable",
            ProcState::Sleeping => "interruptible sleep (waiting for an event)",
            ProcState::DiskSleep => "uninterruptible sleep (usually I/O)",
            ProcState::Stopped => "stopped by a job-control signal",
            ProcState::TracingStop => "stopped by a debugger",
            ProcState::Zombie => "zombie: exited, not yet reaped by its parent",
            ProcState::Dead => "dead",
            ProcState::Idle => "idle kernel thread",
            ProcState::Parked => "parked kernel thread",
            ProcState::Other(_) => "unknown state",
        }
    }
}

impl fmt::Display for ProcState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// The STAT flags `ps` appends to the state letter, with their meaning.
///
/// ```
/// assert!(brood::os::proc::STAT_FLAGS.iter().any(|(c, _)| *c == '+'));
/// ```
pub const STAT_FLAGS: &[(char, &str)] = &[
    ('<', "high priority (negative nice)"),
    ('N', "low priority (positive nice)"),
    ('L', "has pages locked into memory (mlock)"),
    ('s', "session leader"),
    ('l', "multi-threaded"),
    ('+', "in the foreground process group of its terminal"),
];

/// One process as `/proc/PID/stat` and `/proc/PID/cmdline` describe it.
///
/// ```
/// let me = brood::os::ProcInfo::read(brood::os::getpid()).unwrap();
/// assert!(!me.name.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Its pid.
    pub pid: Pid,
    /// Its parent's pid (0 for the kernel's own roots).
    pub ppid: i32,
    /// The command name (`comm`, at most 15 bytes).
    pub name: String,
    /// The scheduler state.
    pub state: ProcState,
    /// Process group id.
    pub pgrp: i32,
    /// Session id.
    pub session: i32,
    /// Controlling terminal (0 for none).
    pub tty_nr: i32,
    /// Foreground process group of that terminal (-1 for none).
    pub tpgid: i32,
    /// Nice value (-20..19).
    pub nice: i32,
    /// Number of threads.
    pub threads: usize,
    /// Memory locked into RAM with `mlock`, in KiB (`VmLck` of
    /// `/proc/PID/status`; 0 when unknown): the `L` of STAT.
    pub locked_kb: u64,
    /// Time since boot at which it started.
    pub start_time: Duration,
    /// The command line, split at NUL bytes (empty for zombies and kernel threads).
    pub cmdline: Vec<String>,
}

impl ProcInfo {
    /// Reads one process. Fails with `NotFound` once it is gone (reaped).
    ///
    /// ```
    /// let me = brood::os::ProcInfo::read(brood::os::getpid()).unwrap();
    /// assert_eq!(me.state, brood::os::ProcState::Running);
    /// ```
    pub fn read(pid: Pid) -> io::Result<ProcInfo> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let mut info = parse_stat(pid, &stat).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unreadable /proc/{pid}/stat"),
            )
        })?;
        // A zombie has no command line; a process may vanish between reads.
        if let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) {
            info.cmdline = raw
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect();
        }
        if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
            info.locked_kb = parse_vm_lck(&status);
        }
        Ok(info)
    }

    /// The STAT column as `ps` shows it: the state letter and its flags
    /// (see [`STAT_FLAGS`]), e.g. `Ss+` or `Z`.
    ///
    /// ```
    /// let me = brood::os::ProcInfo::read(brood::os::getpid()).unwrap();
    /// assert!(me.stat().starts_with('R'));
    /// ```
    pub fn stat(&self) -> String {
        let mut out = String::new();
        out.push(self.state.letter());
        if self.nice < 0 {
            out.push('<');
        } else if self.nice > 0 {
            out.push('N');
        }
        if self.locked_kb > 0 {
            out.push('L');
        }
        if self.session == self.pid.as_raw() {
            out.push('s');
        }
        if self.threads > 1 {
            out.push('l');
        }
        if self.tpgid > 0 && self.tpgid == self.pgrp {
            out.push('+');
        }
        out
    }

    /// The wall-clock time at which it started (boot time + start time).
    ///
    /// ```
    /// let me = brood::os::ProcInfo::read(brood::os::getpid()).unwrap();
    /// assert!(me.started_at().unwrap() <= std::time::SystemTime::now());
    /// ```
    pub fn started_at(&self) -> io::Result<SystemTime> {
        let stat = fs::read_to_string("/proc/stat")?;
        let btime = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no btime in /proc/stat"))?;
        Ok(UNIX_EPOCH + Duration::from_secs(btime) + self.start_time)
    }

    /// The command line joined by spaces, or `[name]` when there is none
    /// (zombies and kernel threads), as `ps` prints it.
    ///
    /// ```
    /// let me = brood::os::ProcInfo::read(brood::os::getpid()).unwrap();
    /// assert!(!me.command().is_empty());
    /// ```
    pub fn command(&self) -> String {
        if self.cmdline.is_empty() {
            format!("[{}]", self.name)
        } else {
            self.cmdline.join(" ")
        }
    }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf takes an integer name and touches no memory.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// Parses the text of `/proc/PID/stat`. The name sits in parentheses and may
/// itself hold spaces and parentheses, so the fields after it are found from
/// the last `)`.
fn parse_stat(pid: Pid, text: &str) -> Option<ProcInfo> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let field = |n: usize| rest.get(n - 3).copied();
    let num = |n: usize| field(n).and_then(|v| v.parse::<i64>().ok());
    let state = ProcState::from_letter(field(3)?.chars().next()?);
    let start_ticks = num(22)? as u64;
    let ticks = clock_ticks();
    Some(ProcInfo {
        pid,
        ppid: num(4)? as i32,
        name,
        state,
        pgrp: num(5)? as i32,
        session: num(6)? as i32,
        tty_nr: num(7)? as i32,
        tpgid: num(8)? as i32,
        nice: num(19)? as i32,
        threads: num(20)?.max(0) as usize,
        locked_kb: 0,
        start_time: Duration::from_secs(start_ticks / ticks)
            + Duration::from_nanos((start_ticks % ticks) * 1_000_000_000 / ticks),
        cmdline: Vec::new(),
    })
}

/// The `VmLck` of `/proc/PID/status`, in KiB (0 when absent: zombies,
/// kernel threads).
fn parse_vm_lck(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Every process visible in `/proc`, ordered by pid. Processes that exit
/// while the table is read are left out.
///
/// ```
/// let all = brood::os::proc::all_processes().unwrap();
/// assert!(all.iter().any(|p| p.pid == brood::os::getpid()));
/// ```
pub fn all_processes() -> io::Result<Vec<ProcInfo>> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            .and_then(Pid::from_raw)
        else {
            continue;
        };
        if let Ok(info) = ProcInfo::read(pid) {
            out.push(info);
        }
    }
    out.sort_by_key(|p| p.pid);
    Ok(out)
}

/// The direct children of `pid`, ordered by pid.
///
/// ```
/// let kids = brood::os::proc::children(brood::os::getpid()).unwrap();
/// assert!(kids.iter().all(|k| k.ppid == brood::os::getpid().as_raw()));
/// ```
pub fn children(pid: Pid) -> io::Result<Vec<ProcInfo>> {
    Ok(all_processes()?
        .into_iter()
        .filter(|p| p.ppid == pid.as_raw())
        .collect())
}

/// The process table as a tree: each process under its parent.
///
/// ```
/// let tree = brood::os::proc::ProcTree::read().unwrap();
/// let me = brood::os::getpid();
/// let mut seen = false;
/// tree.walk(tree.roots(), &mut |info, _depth| seen |= info.pid == me);
/// assert!(seen);
/// ```
#[derive(Debug, Clone)]
pub struct ProcTree {
    procs: BTreeMap<i32, ProcInfo>,
    kids: BTreeMap<i32, Vec<i32>>,
}

impl ProcTree {
    /// Reads the whole table once.
    ///
    /// ```
    /// assert!(brood::os::proc::ProcTree::read().unwrap().get(brood::os::getpid()).is_some());
    /// ```
    pub fn read() -> io::Result<ProcTree> {
        Ok(ProcTree::from_procs(all_processes()?))
    }

    /// Builds a tree from an already read table.
    ///
    /// ```
    /// let table = brood::os::proc::all_processes().unwrap();
    /// let tree = brood::os::proc::ProcTree::from_procs(table);
    /// assert!(!tree.roots().is_empty());
    /// ```
    pub fn from_procs(procs: Vec<ProcInfo>) -> ProcTree {
        let procs: BTreeMap<i32, ProcInfo> =
            procs.into_iter().map(|p| (p.pid.as_raw(), p)).collect();
        let mut kids: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in procs.values() {
            kids.entry(p.ppid).or_default().push(p.pid.as_raw());
        }
        ProcTree { procs, kids }
    }

    /// One process, if it was in the table.
    ///
    /// ```
    /// let tree = brood::os::proc::ProcTree::read().unwrap();
    /// assert_eq!(tree.get(brood::os::getpid()).unwrap().pid, brood::os::getpid());
    /// ```
    pub fn get(&self, pid: Pid) -> Option<&ProcInfo> {
        self.procs.get(&pid.as_raw())
    }

    /// The direct children of `pid` in the table.
    ///
    /// ```
    /// let tree = brood::os::proc::ProcTree::read().unwrap();
    /// let _kids = tree.children(brood::os::getpid());
    /// ```
    pub fn children(&self, pid: Pid) -> Vec<Pid> {
        self.kids
            .get(&pid.as_raw())
            .map(|v| v.iter().filter_map(|p| Pid::from_raw(*p)).collect())
            .unwrap_or_default()
    }

    /// The processes whose parent is not in the table (init, kthreadd, or
    /// the top of a container).
    ///
    /// ```
    /// let tree = brood::os::proc::ProcTree::read().unwrap();
    /// assert!(!tree.roots().is_empty());
    /// ```
    pub fn roots(&self) -> Vec<Pid> {
        self.procs
            .values()
            .filter(|p| !self.procs.contains_key(&p.ppid) || p.ppid == p.pid.as_raw())
            .map(|p| p.pid)
            .collect()
    }

    /// Visits each process under `starts` depth first, parents before their
    /// children, with its depth (0 for a start).
    ///
    /// ```
    /// let tree = brood::os::proc::ProcTree::read().unwrap();
    /// let mut n = 0;
    /// tree.walk(vec![brood::os::getpid()], &mut |_, _| n += 1);
    /// assert!(n >= 1);
    /// ```
    pub fn walk(&self, starts: Vec<Pid>, visit: &mut dyn FnMut(&ProcInfo, usize)) {
        let mut stack: Vec<(Pid, usize)> = starts.into_iter().rev().map(|p| (p, 0)).collect();
        while let Some((pid, depth)) = stack.pop() {
            let Some(info) = self.get(pid) else { continue };
            visit(info, depth);
            for kid in self.children(pid).into_iter().rev() {
                stack.push((kid, depth + 1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let text = "42 (a) b (c)) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 3 0 500 0 0";
        let info = parse_stat(Pid::from_raw(42).unwrap(), text).unwrap();
        assert_eq!(info.name, "a) b (c)");
        assert_eq!(info.state, ProcState::Sleeping);
        assert_eq!(info.ppid, 1);
        assert_eq!(info.threads, 3);
        assert_eq!(info.stat(), "Ssl");
    }

    #[test]
    fn locked_pages_make_the_l_flag() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmLck:\t       8 kB\nVmPin:\t 0 kB\n";
        assert_eq!(parse_vm_lck(status), 8);
        assert_eq!(parse_vm_lck("Name:\tzombie\n"), 0);
        let text = "42 (a) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 -5 3 0 500 0 0";
        let mut info = parse_stat(Pid::from_raw(42).unwrap(), text).unwrap();
        info.locked_kb = 8;
        // The order ps uses: state, priority, L, s, l, +.
        assert_eq!(info.stat(), "S<Lsl");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_stat(Pid::from_raw(1).unwrap(), "garbage").is_none());
        assert!(parse_stat(Pid::from_raw(1).unwrap(), "1 (x) Z").is_none());
    }
}
