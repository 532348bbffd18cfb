//! `brood redis status` and `brood redis requeue`: what a pool's queue,
//! workers and dead letters look like, and dead letters back to the queue.

use std::fmt;
use std::time::Duration;

use redis::{Client, Connection};

use crate::conn::{self, GROUP, Keys};
use crate::error::{Error, ErrorKind, Result};

/// One worker as its heartbeat describes it.
///
/// ```
/// let w = brood_redis::WorkerStatus::default();
/// assert_eq!(w.pending, 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct WorkerStatus {
    /// Its consumer name in the group.
    pub consumer: String,
    /// Host and pid of the worker node.
    pub host: String,
    /// Process id of the worker node.
    pub pid: u32,
    /// Local pool processes.
    pub processes: u32,
    /// Tasks it finished.
    pub done: u64,
    /// Tasks per second over its last heartbeat interval.
    pub rate: f64,
    /// Milliseconds since its last heartbeat (`None`: it never sent one).
    pub heartbeat_ago_ms: Option<u64>,
    /// Tasks it holds (delivered, not acknowledged).
    pub pending: u64,
}

/// A pool's state in Redis.
///
/// ```
/// let s = brood_redis::Status::default();
/// assert!(s.to_string().contains("queued"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The pool's name.
    pub name: String,
    /// Entries in the task stream (waiting or held by a worker).
    pub queued: u64,
    /// Entries no worker has read yet.
    pub waiting: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Workers: live ones and silent ones still listed.
    pub workers: Vec<WorkerStatus>,
    /// Entries in the dead-letter stream.
    pub dead: u64,
    /// The last few dead letters: task name and why.
    pub dead_recent: Vec<(String, String)>,
}

impl Status {
    /// Tasks per second over all workers (their last heartbeat intervals).
    ///
    /// ```
    /// assert_eq!(brood_redis::Status::default().rate(), 0.0);
    /// ```
    pub fn rate(&self) -> f64 {
        self.workers.iter().map(|w| w.rate).sum()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "pool {:?}", self.name)?;
        writeln!(
            f,
            "  queued {} (waiting {}, held by workers {}), dead letters {}, {:.0} tasks/s",
            self.queued,
            self.waiting,
            self.pending,
            self.dead,
            self.rate()
        )?;
        if self.workers.is_empty() {
            writeln!(f, "  no workers")?;
        }
        for w in &self.workers {
            let hb = match w.heartbeat_ago_ms {
                Some(ms) => format!("{:.1} s ago", ms as f64 / 1000.0),
                None => "never".into(),
            };
            writeln!(
                f,
                "  worker {} (pid {} on {}, {} processes): holds {}, done {}, {:.0}/s, heartbeat {hb}",
                w.consumer, w.pid, w.host, w.processes, w.pending, w.done, w.rate
            )?;
        }
        for (task, why) in &self.dead_recent {
            writeln!(f, "  dead: {task}: {why}")?;
        }
        Ok(())
    }
}

fn open(url: &str) -> Result<Connection> {
    let client = Client::open(url).map_err(|e| {
        Error::new(
            ErrorKind::Redis,
            format!("bad Redis URL {}: {e}", conn::redact(url)),
        )
    })?;
    conn::connect(&client, url, Duration::from_secs(2), None)
}

fn redis_err(url: &str, e: redis::RedisError) -> Error {
    Error::new(
        ErrorKind::Redis,
        format!("Redis at {}: {e}", conn::redact(url)),
    )
}

/// The state of pool `name` (or of every pool found, when `None`).
///
/// ```no_run
/// for s in brood_redis::status("redis://127.0.0.1/", Some("demo"))? {
///     print!("{s}");
/// }
/// # Ok::<(), brood_redis::Error>(())
/// ```
pub fn status(url: &str, name: Option<&str>) -> Result<Vec<Status>> {
    let mut c = open(url)?;
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_owned()],
        None => {
            let mut keys: Vec<String> = redis::cmd("KEYS")
                .arg("brood:*:tasks")
                .query(&mut c)
                .map_err(|e| redis_err(url, e))?;
            keys.sort();
            keys.iter()
                .filter_map(|k| {
                    k.strip_prefix("brood:")
                        .and_then(|k| k.strip_suffix(":tasks"))
                        .map(str::to_owned)
                })
                .collect()
        }
    };
    names
        .iter()
        .map(|n| one_status(&mut c, n).map_err(|e| redis_err(url, e)))
        .collect()
}

fn one_status(c: &mut Connection, name: &str) -> redis::RedisResult<Status> {
    let keys = Keys::new(name);
    let mut s = Status {
        name: name.to_owned(),
        ..Status::default()
    };
    s.queued = redis::cmd("XLEN").arg(&keys.tasks).query(c)?;
    s.dead = redis::cmd("XLEN").arg(&keys.dead).query(c)?;
    let groups: redis::RedisResult<redis::Value> =
        redis::cmd("XINFO").arg("GROUPS").arg(&keys.tasks).query(c);
    if let Ok(redis::Value::Array(groups)) = groups {
        for g in groups {
            let fields: Vec<(String, redis::Value)> = match g {
                redis::Value::Array(kv) => kv
                    .chunks(2)
                    .filter_map(|p| match p {
                        [k, v] => Some((conn::as_string(k), v.clone())),
                        _ => None,
                    })
                    .collect(),
                redis::Value::Map(kv) => kv
                    .into_iter()
                    .map(|(k, v)| (conn::as_string(&k), v))
                    .collect(),
                _ => continue,
            };
            let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v);
            if get("name").map(conn::as_string).as_deref() != Some(GROUP) {
                continue;
            }
            s.pending = get("pending").map_or(0, conn::as_int).max(0) as u64;
            s.waiting = get("lag").map_or(0, conn::as_int).max(0) as u64;
        }
    }
    let pending = crate::worker::pending_per_consumer(c, &keys).unwrap_or_default();
    let workers: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(&keys.workers).query(c)?;
    let now = conn::now_ms();
    let mut names: Vec<&String> = workers.keys().chain(pending.keys()).collect();
    names.sort();
    names.dedup();
    for consumer in names {
        let mut w = WorkerStatus {
            consumer: consumer.clone(),
            pending: pending.get(consumer).copied().unwrap_or(0),
            ..WorkerStatus::default()
        };
        if let Some(info) = workers.get(consumer) {
            let parts: Vec<&str> = info.splitn(6, ' ').collect();
            if parts.len() == 6 {
                w.heartbeat_ago_ms = parts[0].parse::<u64>().ok().map(|t| now.saturating_sub(t));
                w.done = parts[1].parse().unwrap_or(0);
                w.rate = parts[2].parse().unwrap_or(0.0);
                w.processes = parts[3].parse().unwrap_or(0);
                w.pid = parts[4].parse().unwrap_or(0);
                w.host = parts[5].to_owned();
            }
        }
        s.workers.push(w);
    }
    let recent: redis::Value = redis::cmd("XREVRANGE")
        .arg(&keys.dead)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(5)
        .query(c)?;
    for (_, fields) in conn::parse_entries(&recent) {
        let f = |n: &str| {
            conn::field(&fields, n)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        s.dead_recent.push((f("f"), f("why")));
    }
    Ok(s)
}

/// Moves every dead letter of pool `name` back to its task stream (a new
/// delivery count; the caller, if still waiting, takes the first result it
/// gets). Returns how many moved.
///
/// ```no_run
/// let n = brood_redis::requeue("redis://127.0.0.1/", "demo")?;
/// println!("{n} task(s) back in the queue");
/// # Ok::<(), brood_redis::Error>(())
/// ```
pub fn requeue(url: &str, name: &str) -> Result<u64> {
    let mut c = open(url)?;
    let keys = Keys::new(name);
    let mut moved = 0;
    // Only the dead letters there now: a poison task moved back may die
    // again while this runs, and must not be moved round and round.
    let last: redis::Value = redis::cmd("XREVRANGE")
        .arg(&keys.dead)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut c)
        .map_err(|e| redis_err(url, e))?;
    let Some((end, _)) = conn::parse_entries(&last).into_iter().next() else {
        return Ok(0);
    };
    let mut start = "-".to_owned();
    loop {
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(&keys.dead)
            .arg(&start)
            .arg(&end)
            .arg("COUNT")
            .arg(1000)
            .query(&mut c)
            .map_err(|e| redis_err(url, e))?;
        let entries = conn::parse_entries(&v);
        let Some((newest, _)) = entries.last() else {
            return Ok(moved);
        };
        start = format!("({newest}");
        let mut pipe = redis::pipe();
        for (id, fields) in &entries {
            let mut add = redis::cmd("XADD");
            add.arg(&keys.tasks).arg("*");
            for f in ["f", "a", "r", "s"] {
                add.arg(f).arg(conn::field(fields, f).unwrap_or_default());
            }
            pipe.add_command(add).ignore();
            pipe.cmd("XDEL").arg(&keys.dead).arg(id).ignore();
        }
        pipe.query::<()>(&mut c).map_err(|e| redis_err(url, e))?;
        moved += entries.len() as u64;
    }
}
