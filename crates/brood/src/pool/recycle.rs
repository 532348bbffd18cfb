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

/// One hierarchy the pool's cgroup lives in: the v2 one (both
/// controllers), or a v1 hierarchy per controller on machines where the
/// controllers are bound to v1 (hybrid set-ups, as in many containers).
struct Group {
    /// The pool's own directory in this hierarchy.
    dir: PathBuf,
    v2: bool,
    memory: bool,
    cpu: bool,
}

/// The pool's own cgroup (`<our cgroup>/brood-<pid>-<n>`), under which
/// each worker gets `w<k>` with the limits.
pub(crate) struct PoolCgroup {
    groups: Vec<Group>,
    limits: CgroupLimits,
    next: usize,
    /// Worker cgroups that could not be removed yet (retried on drop).
    leftovers: Vec<PathBuf>,
}

/// One worker's cgroup (a directory per hierarchy).
pub(crate) struct WorkerCgroup {
    dirs: Vec<PathBuf>,
    /// Where the kernel counts its OOM kills (`oom_kill N`).
    oom_file: Option<PathBuf>,
}

fn unavailable(why: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "PoolBuilder::cgroup_limits needs a writable cgroup hierarchy (v2, or v1 where the \
         controllers are bound to v1) with the controllers for the limits asked for, and this \
         machine has none: {why}"
    ))
}

/// A cgroup mount from `/proc/self/mountinfo`: its root, mount point,
/// type and super options.
struct Mount {
    root: String,
    point: PathBuf,
    v2: bool,
    options: Vec<String>,
}

fn mounts() -> Vec<Mount> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut r = right.split_whitespace();
            let fstype = r.next()?;
            if fstype != "cgroup2" && fstype != "cgroup" {
                return None;
            }
            let options = r
                .nth(1)
                .unwrap_or("")
                .split(',')
                .map(str::to_string)
                .collect();
            let mut l = left.split_whitespace();
            let root = l.nth(3)?.to_string();
            let point = PathBuf::from(l.next()?);
            Some(Mount {
                root,
                point,
                v2: fstype == "cgroup2",
                options,
            })
        })
        .collect()
}

/// This process's cgroup path in the hierarchy whose `/proc/self/cgroup`
/// controller field satisfies `pick` (`""` is v2).
fn own_path(pick: impl Fn(&str) -> bool) -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        pick(controllers).then(|| path.to_string())
    })
}

/// `mount`'s directory for the cgroup at `path`.
fn dir_in(mount: &Mount, path: &str) -> PathBuf {
    let rel = path
        .strip_prefix(mount.root.as_str())
        .unwrap_or(path)
        .trim_start_matches('/');
    mount.point.join(rel)
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value)
}

impl PoolCgroup {
    /// Makes the pool's cgroup, or says exactly why it cannot.
    pub(crate) fn create(limits: CgroupLimits, tag: &str) -> Result<PoolCgroup> {
        if limits.memory_max == Some(0) {
            return Err(Error::invalid(
                "cgroup_limits: memory_max must be more than 0 bytes",
            ));
        }
        if limits.cpu_max.is_some_and(|c| !c.is_finite() || c <= 0.0) {
            return Err(Error::invalid(
                "cgroup_limits: cpu_max must be a positive number of CPUs",
            ));
        }
        let name = format!("brood-{}-{tag}", crate::os::pid::current());
        let all = mounts();
        let v2_failure = match create_v2(&all, limits, &name) {
            Ok(group) => return Ok(PoolCgroup::with(vec![group], limits)),
            Err(why) => why,
        };
        match create_v1(&all, limits, &name) {
            Ok(groups) => Ok(PoolCgroup::with(groups, limits)),
            Err(v1) => Err(unavailable(format!("{v2_failure}; and {v1}"))),
        }
    }

    fn with(groups: Vec<Group>, limits: CgroupLimits) -> PoolCgroup {
        PoolCgroup {
            groups,
            limits,
            next: 0,
            leftovers: Vec::new(),
        }
    }

    /// The limits each worker gets.
    pub(crate) fn limits(&self) -> CgroupLimits {
        self.limits
    }

    /// Puts `pid` into a new cgroup of its own with the pool's limits.
    pub(crate) fn add(&mut self, pid: Pid) -> Result<WorkerCgroup> {
        self.next += 1;
        let mut worker = WorkerCgroup {
            dirs: Vec::new(),
            oom_file: None,
        };
        let fail = |what: String, e: io::Error| Error::os_error(what, e);
        for g in &self.groups {
            let dir = g.dir.join(format!("w{}", self.next));
            fs::create_dir(&dir)
                .map_err(|e| fail(format!("cannot create {}", dir.display()), e))?;
            worker.dirs.push(dir.clone());
            if let (true, Some(bytes)) = (g.memory, self.limits.memory_max) {
                let (max, swap, events) = if g.v2 {
                    ("memory.max", "memory.swap.max", "memory.events")
                } else {
                    (
                        "memory.limit_in_bytes",
                        "memory.memsw.limit_in_bytes",
                        "memory.oom_control",
                    )
                };
                write(&dir.join(max), &bytes.to_string())
                    .map_err(|e| fail(format!("cannot set {max}"), e))?;
                // Past the cap the kernel kills rather than swaps (absent
                // without swap accounting: then there is no swap to use).
                let swap_max = if g.v2 {
                    "0".to_string()
                } else {
                    bytes.to_string()
                };
                let _ = write(&dir.join(swap), &swap_max);
                worker.oom_file = Some(dir.join(events));
            }
            if let (true, Some(cpus)) = (g.cpu, self.limits.cpu_max) {
                let quota = ((cpus * CPU_PERIOD_US as f64) as u64).max(1000);
                if g.v2 {
                    write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))
                        .map_err(|e| fail("cannot set cpu.max".into(), e))?;
                } else {
                    write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())
                        .and_then(|()| write(&dir.join("cpu.cfs_quota_us"), &quota.to_string()))
                        .map_err(|e| fail("cannot set cpu.cfs_quota_us".into(), e))?;
                }
            }
            write(&dir.join("cgroup.procs"), &pid.to_string())
                .map_err(|e| fail(format!("cannot move worker {pid} into its cgroup"), e))?;
        }
        Ok(worker)
    }

    /// Removes a worker's cgroup once its process is gone (reaped).
    pub(crate) fn remove(&mut self, worker: WorkerCgroup) {
        for dir in worker.dirs {
            if fs::remove_dir(&dir).is_err() {
                self.leftovers.push(dir);
            }
        }
    }
}

/// The v2 way: our cgroup delegates the controllers to the pool's.
fn create_v2(
    all: &[Mount],
    limits: CgroupLimits,
    name: &str,
) -> std::result::Result<Group, String> {
    let mount = all
        .iter()
        .find(|m| m.v2)
        .ok_or("no cgroup2 file system is mounted")?;
    let own = own_path(|c| c.is_empty()).ok_or("/proc/self/cgroup has no cgroup v2 line")?;
    let base = dir_in(mount, &own);
    let mut wanted = Vec::new();
    if limits.memory_max.is_some() {
        wanted.push("memory");
    }
    if limits.cpu_max.is_some() {
        wanted.push("cpu");
    }
    let controllers = base.join("cgroup.controllers");
    let available = fs::read_to_string(&controllers)
        .map_err(|e| format!("cannot read {}: {e}", controllers.display()))?;
    for c in &wanted {
        if !available.split_whitespace().any(|a| a == *c) {
            return Err(format!(
                "the cgroup v2 hierarchy at {} offers no {c:?} controller (cgroup.controllers: {:?})",
                base.display(),
                available.trim()
            ));
        }
    }
    // Delegate the controllers to our children (EBUSY when our own cgroup
    // holds processes and is not the root: the "no internal processes"
    // rule).
    let enable = wanted
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let subtree = base.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&subtree).unwrap_or_default();
    if wanted
        .iter()
        .any(|c| !enabled.split_whitespace().any(|e| e == *c))
    {
        write(&subtree, &enable)
            .map_err(|e| format!("cannot write {enable:?} to {}: {e}", subtree.display()))?;
    }
    let dir = base.join(name);
    fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if !enable.is_empty()
        && let Err(e) = write(&dir.join("cgroup.subtree_control"), &enable)
    {
        let _ = fs::remove_dir(&dir);
        return Err(format!(
            "cannot enable {enable:?} in {}: {e}",
            dir.display()
        ));
    }
    Ok(Group {
        dir,
        v2: true,
        memory: limits.memory_max.is_some(),
        cpu: limits.cpu_max.is_some(),
    })
}

/// The v1 way: a directory in each controller's own hierarchy.
fn create_v1(
    all: &[Mount],
    limits: CgroupLimits,
    name: &str,
) -> std::result::Result<Vec<Group>, String> {
    let mut groups: Vec<Group> = Vec::new();
    let wanted = [
        ("memory", limits.memory_max.is_some()),
        ("cpu", limits.cpu_max.is_some()),
    ];
    for (controller, on) in wanted {
        if !on {
            continue;
        }
        let made = (|| {
            let mount = all
                .iter()
                .find(|m| !m.v2 && m.options.iter().any(|o| o == controller))
                .ok_or(format!(
                    "no cgroup v1 hierarchy has the {controller:?} controller"
                ))?;
            let own = own_path(|c| c.split(',').any(|c| c == controller))
                .ok_or(format!("/proc/self/cgroup has no {controller:?} line"))?;
            let dir = dir_in(mount, &own).join(name);
            fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            Ok::<_, String>(Group {
                dir,
                v2: false,
                memory: controller == "memory",
                cpu: controller == "cpu",
            })
        })();
        match made {
            Ok(g) => groups.push(g),
            Err(why) => {
                for g in groups {
                    let _ = fs::remove_dir(g.dir);
                }
                return Err(why);
            }
        }
    }
    Ok(groups)
}

impl Drop for PoolCgroup {
    fn drop(&mut self) {
        for dir in self.leftovers.drain(..) {
            let _ = fs::remove_dir(dir);
        }
        for g in &self.groups {
            if let Ok(entries) = fs::read_dir(&g.dir) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        let _ = fs::remove_dir(e.path());
                    }
                }
            }
            let _ = fs::remove_dir(&g.dir);
        }
    }
}

impl WorkerCgroup {
    /// How many times the kernel's OOM killer killed a process of this
    /// cgroup because of its memory limit (`oom_kill` in `memory.events`,
    /// v2, or `memory.oom_control`, v1).
    pub(crate) fn oom_kills(&self) -> u64 {
        self.oom_file
            .as_ref()
            .and_then(|f| fs::read_to_string(f).ok())
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
    pub fn cgroup_limits(
        mut self,
        memory_max: Option<u64>,
        cpu_max: Option<f64>,
    ) -> super::PoolBuilder {
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
