//! `brood ps`: the process table, flat like `ps -ajx` or as a tree like
//! `pstree`, read from `/proc` through [`brood::os::proc`].
//!
//! The rows are also what the tour prints when it shows a process, so that
//! what a lesson says can be checked against `brood ps` (or `ps -ajx`).

use std::collections::{BTreeSet, HashSet};
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use brood::os::proc::{ProcTree, STAT_FLAGS};
use brood::os::{Pid, ProcInfo, ProcState};

/// The column titles, aligned with [`row`].
pub(crate) const HEADER: &str = " PPID    PID   PGID    SID TTY      STAT   THR  ELAPSED COMMAND";

/// Runs `brood ps`: prints the table (or the tree when `tree`), limited to
/// `root` and its descendants when given, then the legend.
pub(crate) fn run(tree: bool, root: Option<i32>) -> Result<()> {
    let table = ProcTree::read().context("cannot read the process table from /proc")?;
    let starts = match root {
        Some(raw) => {
            let pid = Pid::from_raw(raw).with_context(|| format!("{raw} is not a valid pid"))?;
            if table.get(pid).is_none() {
                bail!("no process with pid {raw} (it may have exited)");
            }
            vec![pid]
        }
        None => table.roots(),
    };
    let uptime = uptime();
    let width = terminal_width();
    let mut shown: Vec<&ProcInfo> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    if tree {
        let mut seen = HashSet::new();
        let count = starts.len();
        for (i, pid) in starts.into_iter().enumerate() {
            draw(
                &table,
                pid,
                "",
                i + 1 == count,
                true,
                &mut seen,
                &mut |info, prefix| {
                    shown.push(info);
                    lines.push(fit(row(info, prefix, uptime, mark(info, &table)), width));
                },
            );
        }
    } else {
        // `walk` reaches each process through its parent; print them in pid
        // order, as `ps` does.
        let mut pids: Vec<Pid> = Vec::new();
        table.walk(starts, &mut |info, _| pids.push(info.pid));
        pids.sort();
        pids.dedup();
        for info in pids.into_iter().filter_map(|pid| table.get(pid)) {
            shown.push(info);
            lines.push(fit(row(info, "", uptime, mark(info, &table)), width));
        }
    }
    println!("{HEADER}");
    for line in &lines {
        println!("{line}");
    }
    println!();
    print!("{}", legend(&shown));
    Ok(())
}

/// Draws `pid` and, below it, its descendants with `pstree`-style branches,
/// calling `emit` with each process and the prefix to put before its command.
fn draw<'t>(
    table: &'t ProcTree,
    pid: Pid,
    above: &str,
    last: bool,
    top: bool,
    seen: &mut HashSet<Pid>,
    emit: &mut dyn FnMut(&'t ProcInfo, &str),
) {
    // A process listed as its own parent would otherwise loop for ever.
    if !seen.insert(pid) {
        return;
    }
    let Some(info) = table.get(pid) else { return };
    let (branch, below) = if top {
        (String::new(), String::new())
    } else if last {
        (format!("{above}└─ "), format!("{above}   "))
    } else {
        (format!("{above}├─ "), format!("{above}│  "))
    };
    emit(info, &branch);
    let kids: Vec<Pid> = table
        .children(pid)
        .into_iter()
        .filter(|k| *k != pid)
        .collect();
    let count = kids.len();
    for (i, kid) in kids.into_iter().enumerate() {
        draw(table, kid, &below, i + 1 == count, false, seen, emit);
    }
}

/// One row of the table: the columns of [`HEADER`], then `prefix` (the tree's
/// branches), the command, and `mark` if any.
pub(crate) fn row(
    info: &ProcInfo,
    prefix: &str,
    uptime: Option<Duration>,
    mark: Option<String>,
) -> String {
    let elapsed = uptime
        .and_then(|up| up.checked_sub(info.start_time))
        .map_or_else(|| "?".to_string(), format_elapsed);
    let mut line = format!(
        "{:>5} {:>6} {:>6} {:>6} {:<8} {:<5} {:>4} {:>8} {}{}",
        info.ppid,
        info.pid,
        info.pgrp,
        info.session,
        tty_name(info.tty_nr),
        info.stat(),
        info.threads,
        elapsed,
        prefix,
        printable(&info.command()),
    );
    if let Some(mark) = mark {
        line.push_str("  ");
        line.push_str(&mark);
    }
    line
}

/// A command line as `ps` prints it: every control character (a newline,
/// a tab, an escape sequence) becomes a space, so one process is one row.
pub(crate) fn printable(command: &str) -> String {
    command
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A row for `info` as the tour prints it: no tree, marks as `brood ps`
/// would show them. `adopted` is true when the tour knows that the process
/// was orphaned (it saw its parent change): a parent of PID 1 is then
/// called an adoption, not only a parent.
pub(crate) fn tour_row(info: &ProcInfo, adopted: bool) -> String {
    let parent = Pid::from_raw(info.ppid).and_then(|p| ProcInfo::read(p).ok());
    row(
        info,
        "",
        uptime(),
        mark_with(info, parent.as_ref(), adopted),
    )
}

/// The note after a row, for zombies and orphans (see [`legend`] for the
/// rules).
fn mark(info: &ProcInfo, table: &ProcTree) -> Option<String> {
    let parent = Pid::from_raw(info.ppid).and_then(|p| table.get(p));
    mark_with(info, parent, false)
}

/// [`mark`] with the parent already looked up; `adopted` as in
/// [`tour_row`].
fn mark_with(info: &ProcInfo, parent: Option<&ProcInfo>, adopted: bool) -> Option<String> {
    if info.state == ProcState::Zombie {
        let by = match parent {
            Some(p) => format!("{} ({})", p.pid, p.name),
            None => info.ppid.to_string(),
        };
        Some(format!("<zombie: exited, not yet reaped by PPID {by}>"))
    } else if is_orphan(info) && adopted {
        Some("<orphan: adopted by PID 1>".to_string())
    } else if is_orphan(info) {
        // /proc does not say whether the first parent exited or PID 1
        // started it itself: only the fact is printed.
        Some("<orphan?: parent is PID 1>".to_string())
    } else {
        None
    }
}

/// The orphan rule: the parent is pid 1 and the process is neither pid 1
/// nor a session leader.
fn is_orphan(info: &ProcInfo) -> bool {
    info.ppid == 1 && info.pid.as_raw() != 1 && info.session != info.pid.as_raw()
}

/// The legend after the table: each STAT letter and flag seen, and the rules
/// behind the marks.
fn legend(shown: &[&ProcInfo]) -> String {
    let mut states: BTreeSet<char> = BTreeSet::new();
    let mut flags: BTreeSet<char> = BTreeSet::new();
    for info in shown {
        let stat = info.stat();
        let mut letters = stat.chars();
        if let Some(state) = letters.next() {
            states.insert(state);
        }
        flags.extend(letters);
    }
    let mut out = String::from("STAT: the first letter is the scheduler state, then flags.\n");
    for letter in &states {
        let meaning = ProcState::from_letter(*letter).meaning();
        out.push_str(&format!("  {letter}  {meaning}\n"));
    }
    for flag in &flags {
        if let Some((_, meaning)) = STAT_FLAGS.iter().find(|(c, _)| c == flag) {
            out.push_str(&format!("  {flag}  {meaning}\n"));
        }
    }
    out.push_str(
        "THR: threads.  ELAPSED: time since the process started ([[days-]hh:]mm:ss).\n\
         TTY: controlling terminal (? for none).  Commands in [brackets] have no command\n\
         line: zombies and kernel threads.\n",
    );
    let zombies = shown
        .iter()
        .filter(|p| p.state == ProcState::Zombie)
        .count();
    let orphans = shown.iter().filter(|p| is_orphan(p)).count();
    out.push_str(&format!(
        "<zombie>: {zombies} shown. The process has exited, but its parent has not collected\n\
         \x20 its exit status with wait(); the kernel keeps its pid until it does.\n"
    ));
    out.push_str(&format!(
        "<orphan?>: {orphans} shown. Rule used: the parent is PID 1 and the process is\n\
         \x20 not a session leader (so daemons that called setsid, and most services\n\
         \x20 init started, are not marked). /proc does not say whether PID 1 adopted\n\
         \x20 it (its first parent exited) or started it: hence the question mark. An\n\
         \x20 orphan adopted by a subreaper other than PID 1 is not marked.\n"
    ));
    out
}

/// The name `ps` gives a controlling terminal number (`?` for none).
fn tty_name(tty_nr: i32) -> String {
    if tty_nr == 0 {
        return "?".to_string();
    }
    let nr = tty_nr as u32;
    let major = (nr >> 8) & 0xfff;
    let minor = (nr & 0xff) | ((nr >> 12) & 0xfff00);
    match major {
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        5 if minor == 0 => "tty".to_string(),
        _ => format!("{major},{minor}"),
    }
}

/// Time since boot, from `/proc/uptime`.
pub(crate) fn uptime() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_secs_f64(secs))
}

/// Formats a duration as `ps` formats ELAPSED: `[[dd-]hh:]mm:ss`.
fn format_elapsed(d: Duration) -> String {
    let total = d.as_secs();
    let (days, hours, mins, secs) = (
        total / 86_400,
        (total / 3600) % 24,
        (total / 60) % 60,
        total % 60,
    );
    if days > 0 {
        format!("{days}-{hours:02}:{mins:02}:{secs:02}")
    } else if hours > 0 {
        format!("{hours:02}:{mins:02}:{secs:02}")
    } else {
        format!("{mins:02}:{secs:02}")
    }
}

/// The terminal's width when stdout is a terminal; `None` otherwise (lines
/// are then never cut, as `ps` does into a pipe).
fn terminal_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    // SAFETY: an all-zero winsize is a valid value of the C struct.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into `size`, which is valid for
    // writes for the duration of the call.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// Cuts `line` to `width` characters (when there is a width), keeping its
/// mark: the command is what gets shortened.
fn fit(line: String, width: Option<usize>) -> String {
    let Some(width) = width else { return line };
    if line.chars().count() <= width {
        return line;
    }
    let (body, mark) = match line.find("  <") {
        Some(at) => (&line[..at], &line[at..]),
        None => (line.as_str(), ""),
    };
    let room = width.saturating_sub(mark.chars().count()).max(HEADER.len());
    let cut: String = body.chars().take(room).collect();
    format!("{cut}{mark}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_like_ps() {
        assert_eq!(format_elapsed(Duration::from_secs(5)), "00:05");
        assert_eq!(format_elapsed(Duration::from_secs(3725)), "01:02:05");
        assert_eq!(format_elapsed(Duration::from_secs(90_061)), "1-01:01:01");
    }

    #[test]
    fn tty_names() {
        assert_eq!(tty_name(0), "?");
        assert_eq!(tty_name((136 << 8) | 3), "pts/3");
        assert_eq!(tty_name((4 << 8) | 1), "tty1");
    }

    #[test]
    fn control_characters_print_as_spaces() {
        assert_eq!(printable("a\nb\tc\r\u{1b}[31md"), "a b c  [31md");
        assert_eq!(printable("plain 中文"), "plain 中文");
    }

    #[test]
    fn fit_keeps_the_mark() {
        let line = format!("{}  <zombie: x>", "a".repeat(200));
        let cut = fit(line, Some(100));
        assert!(cut.ends_with("<zombie: x>"));
        assert!(cut.chars().count() <= 100);
    }
}
