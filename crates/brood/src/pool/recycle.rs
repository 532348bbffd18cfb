//! Recycling workers by memory (issue 13): the resident-set probe behind
//! [`PoolBuilder::max_rss`](super::PoolBuilder::max_rss), and the
//! per-worker cgroups behind
//! [`PoolBuilder::cgroup_limits`](super::PoolBuilder::cgroup_limits).
//! Called from the supervisor through `status::Board`; see `README.md`,
//! "Recycling".

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::os::Pid;

/// Reads one process's resident set size from `/proc/<pid>/statm`, kept
/// open so that each reading is one `pread`.
pub(crate) struct RssProbe {
    file: File,
}

impl RssProbe {
    pub(crate) fn open(pid: Pid) -> Option<RssProbe> {
        File::open(format!("/proc/{pid}/statm"))
            .ok()
            .map(|file| RssProbe { file })
    }

    /// Resident bytes now; `None` once the process is gone.
    pub(crate) fn rss(&self) -> Option<u64> {
        let mut buf = [0u8; 128];
        let n = self.file.read_at(&mut buf, 0).ok()?;
        parse_statm(&buf[..n])
    }
}

/// The resident set size of `pid` in bytes (`/proc/<pid>/statm`), `None`
/// if it cannot be read (gone, or not ours to read).
pub(crate) fn rss_of(pid: Pid) -> Option<u64> {
    parse_statm(&fs::read(format!("/proc/{pid}/statm")).ok()?)
}

/// `statm` is `size resident shared ...` in pages.
fn parse_statm(raw: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(raw).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// `1.5 MiB`-style sizes for messages.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The limits [`PoolBuilder::cgroup_limits`](super::PoolBuilder::cgroup_limits) asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CgroupLimits {
    pub(crate) memory_max: Option<u64>,
    /// CPUs (1.5 = one and a half), as `cpu.max` over a 100 ms period.
    pub(crate) cpu_max: Option<f64>,
}

const CPU_PERIOD_US: u64 = 100_000;

/// The pool's own cgroup (`<our cgroup>/brood-<pid>-<n>`), under which
/// each worker gets `w<k>` with the limits.
pub(crate) struct PoolCgroup {
    dir: PathBuf,
    limits: CgroupLimits,
    next: usize,
    /// Worker cgroups that could not be removed yet (retried on drop).
    leftovers: Vec<PathBuf>,
}

/// One worker's cgroup.
pub(crate) struct WorkerCgroup {
    dir: PathBuf,
}

fn unavailable(why: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "PoolBuilder::cgroup_limits needs a writable cgroup v2 hierarchy with the \
         controllers for the limits asked for, and this machine has none: {why}"
    ))
}

/// Where the cgroup v2 hierarchy is mounted (`/proc/self/mountinfo`).
fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// This process's cgroup v2 path (`0::/path` in `/proc/self/cgroup`).
fn own_cgroup() -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("0::").map(str::to_string))
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value)
}

impl PoolCgroup {
    /// Makes the pool's cgroup, or says exactly why it cannot.
    pub(crate) fn create(limits: CgroupLimits, tag: &str) -> Result<PoolCgroup> {
        if limits.memory_max == Some(0) {
            return Err(Error::invalid("cgroup_limits: memory_max must be more than 0 bytes"));
        }
        if limits.cpu_max.is_some_and(|c| !c.is_finite() || c <= 0.0) {
            return Err(Error::invalid("cgroup_limits: cpu_max must be a positive number of CPUs"));
        }
        let mount =
            cgroup2_mount().ok_or_else(|| unavailable("no cgroup2 file system is mounted"))?;
        let own = own_cgroup()
            .ok_or_else(|| unavailable("/proc/self/cgroup has no cgroup v2 (\"0::\") line"))?;
        let base = mount.join(own.trim_start_matches('/'));
        let mut wanted = Vec::new();
        if limits.memory_max.is_some() {
            wanted.push("memory");
        }
        if limits.cpu_max.is_some() {
            wanted.push("cpu");
        }
        let available = fs::read_to_string(base.join("cgroup.controllers")).map_err(|e| {
            unavailable(format!(
                "cannot read {}: {e}",
                base.join("cgroup.controllers").display()
            ))
        })?;
        for c in &wanted {
            if !available.split_whitespace().any(|a| a == *c) {
                return Err(unavailable(format!(
                    "the cgroup v2 hierarchy at {} offers no {c:?} controller (cgroup.controllers: {:?}); \
                     on a cgroup v1 or hybrid machine it is bound to v1",
                    base.display(),
                    available.trim()
                )));
            }
        }
        // Delegate the controllers to our children (fails with EBUSY when
        // our own cgroup holds processes and is not the root: the "no
        // internal processes" rule).
        let enable: String = wanted.iter().map(|c| format!("+{c} ")).collect();
        let subtree = base.join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&subtree).unwrap_or_default();
        if wanted
            .iter()
            .any(|c| !enabled.split_whitespace().any(|e| e == *c))
        {
            write(&subtree, enable.trim()).map_err(|e| {
                unavailable(format!("cannot write {:?} to {}: {e}", enable.trim(), subtree.display()))
            })?;
        }
        let dir = base.join(format!("brood-{}-{tag}", std::process::id()));
        fs::create_dir(&dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let pool = PoolCgroup {
            dir,
            limits,
            next: 0,
            leftovers: Vec::new(),
        };
        write(&pool.dir.join("cgroup.subtree_control"), enable.trim()).map_err(|e| {
            unavailable(format!(
                "cannot enable {:?} in {}: {e}",
                enable.trim(),
                pool.dir.display()
            ))
        })?;
        Ok(pool)
    }

    /// Puts `pid` into a new cgroup of its own with the pool's limits.
    pub(crate) fn add(&mut self, pid: Pid) -> Result<WorkerCgroup> {
        self.next += 1;
        let dir = self.dir.join(format!("w{}", self.next));
        let fail = |what: String, e: io::Error| Error::os_error(what, e);
        fs::create_dir(&dir).map_err(|e| fail(format!("cannot create {}", dir.display()), e))?;
        let worker = WorkerCgroup { dir };
        if let Some(bytes) = self.limits.memory_max {
            write(&worker.dir.join("memory.max"), &bytes.to_string())
                .map_err(|e| fail("cannot set memory.max".into(), e))?;
            // Past the cap the kernel kills rather than swaps (absent
            // without swap accounting: then there is no swap to go to).
            let _ = write(&worker.dir.join("memory.swap.max"), "0");
        }
        if let Some(cpus) = self.limits.cpu_max {
            let quota = ((cpus * CPU_PERIOD_US as f64) as u64).max(1000);
            write(
                &worker.dir.join("cpu.max"),
                &format!("{quota} {CPU_PERIOD_US}"),
            )
            .map_err(|e| fail("cannot set cpu.max".into(), e))?;
        }
        write(&worker.dir.join("cgroup.procs"), &pid.to_string())
            .map_err(|e| fail(format!("cannot move worker {pid} into its cgroup"), e))?;
        Ok(worker)
    }

    /// The limits each worker gets.
    pub(crate) fn limits(&self) -> CgroupLimits {
        self.limits
    }

    /// Removes a worker's cgroup once its process is gone (reaped).
    pub(crate) fn remove(&mut self, worker: WorkerCgroup) {
        if fs::remove_dir(&worker.dir).is_err() {
            self.leftovers.push(worker.dir);
        }
    }
}

impl Drop for PoolCgroup {
    fn drop(&mut self) {
        for dir in self.leftovers.drain(..) {
            let _ = fs::remove_dir(dir);
        }
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

impl WorkerCgroup {
    /// How many times the kernel's OOM killer killed a process of this
    /// cgroup because of its `memory.max` (`oom_kill` in `memory.events`).
    pub(crate) fn oom_kills(&self) -> u64 {
        fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }
}

impl super::PoolBuilder {
    /// Recycles a worker whose resident memory is past `bytes` after a
    /// task (joblib/loky's memory-leak protection): the supervisor reads
    /// the worker's RSS from `/proc/<pid>/statm` after each result (one
    /// `pread`), and a worker past the ceiling takes no more work,
    /// finishes what it holds and is replaced. Its results all count. The
    /// default is no ceiling.
    ///
    /// ```
    /// let pool = brood::Pool::builder().processes(1).max_rss(1 << 40).build()?;
    /// assert_eq!(pool.apply(|x: u8| x, 1)?, 1);
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn max_rss(mut self, bytes: u64) -> super::PoolBuilder {
        self.status.max_rss = Some(bytes);
        self
    }

    /// Puts each worker in a cgroup (v2) of its own with `memory.max =
    /// memory_max` bytes and `cpu.max` = `cpu_max` CPUs (1.5 = one and a
    /// half). A worker the kernel kills for going past `memory.max` fails
    /// the task it held with [`ErrorKind::WorkerLost`](crate::ErrorKind::WorkerLost),
    /// whose message says `OutOfMemory`, and is replaced. The cgroups go
    /// with the pool.
    ///
    /// Needs a writable cgroup v2 hierarchy that offers the `memory`
    /// (and `cpu`) controller to this process's cgroup, and a cgroup that
    /// may delegate them (the root, or one without processes of its own);
    /// otherwise `build` fails with an error that says which part is
    /// missing — never silently without limits.
    ///
    /// ```
    /// match brood::Pool::builder().processes(1).cgroup_limits(Some(256 << 20), Some(1.0)).build() {
    ///     Ok(pool) => assert_eq!(pool.apply(|x: u8| x, 2)?, 2),
    ///     Err(e) => assert!(e.to_string().contains("cgroup")),
    /// }
    /// # Ok::<(), brood::Error>(())
    /// ```
    pub fn cgroup_limits(mut self, memory_max: Option<u64>, cpu_max: Option<f64>) -> super::PoolBuilder {
        self.status.cgroup = Some(CgroupLimits {
            memory_max,
            cpu_max,
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_is_pages_times_page_size() {
        let page = rustix::param::page_size() as u64;
        assert_eq!(parse_statm(b"1000 250 30 1 0 80 0\n"), Some(250 * page));
        assert_eq!(parse_statm(b"garbage"), None);
        assert!(rss_of(crate::os::getpid()).unwrap() > 0);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(100 << 20), "100.0 MiB");
    }
}
