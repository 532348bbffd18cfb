//! Connecting to Redis: clear errors at start, reconnection with backoff
//! later, key names, and the small helpers both sides share.

use std::time::{Duration, Instant};

use redis::{Client, Connection, RedisError};

use crate::error::{Error, ErrorKind, Result};

/// The key names of one pool (`brood:{name}:…`, see README.md).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) tasks: String,
    pub(crate) dead: String,
    pub(crate) workers: String,
    prefix: String,
}

/// The consumer group every worker of a pool joins.
pub(crate) const GROUP: &str = "workers";

impl Keys {
    pub(crate) fn new(name: &str) -> Keys {
        let prefix = format!("brood:{name}:");
        Keys {
            tasks: format!("{prefix}tasks"),
            dead: format!("{prefix}dead"),
            workers: format!("{prefix}workers"),
            prefix,
        }
    }

    pub(crate) fn reply(&self, caller: &str) -> String {
        format!("{}reply:{caller}", self.prefix)
    }
}

/// `url` with its password replaced by `***`, for messages.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let host_start = rest.find('/').unwrap_or(rest.len());
    match rest[..host_start].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{}{user}:***@{}", &url[..scheme_end + 3], &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// Whether `e` is worth a reconnect and a retry (the connection broke, or
/// Redis is still loading its data after a restart).
pub(crate) fn retryable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.code(), Some("LOADING") | Some("BUSY") | Some("TRYAGAIN"))
}

/// Whether `e` says the consumer group (or its stream) is gone.
pub(crate) fn nogroup(e: &RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

/// Turns a connect failure into an error that names the URL.
pub(crate) fn connect_error(url: &str, timeout: Duration, e: &RedisError) -> Error {
    let url = redact(url);
    let text = e.to_string();
    let code = e.code().unwrap_or("");
    if matches!(code, "WRONGPASS" | "NOAUTH" | "NOPERM")
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
        || text.to_lowercase().contains("authentication")
    {
        Error::new(
            ErrorKind::Auth,
            format!("Redis at {url} refused the credentials: {text}"),
        )
    } else if retryable(e) {
        Error::new(
            ErrorKind::Unreachable,
            format!(
                "cannot reach Redis at {url} (connect timeout {:.1} s): {text}",
                timeout.as_secs_f64()
            ),
        )
    } else {
        Error::new(ErrorKind::Redis, format!("Redis at {url}: {text}"))
    }
}

/// Opens a connection, authenticates (redis-rs does it from the URL) and
/// pings, within `timeout`.
pub(crate) fn connect(
    client: &Client,
    url: &str,
    timeout: Duration,
    read_timeout: Option<Duration>,
) -> Result<Connection> {
    let mut con = client
        .get_connection_with_timeout(timeout)
        .map_err(|e| connect_error(url, timeout, &e))?;
    con.set_read_timeout(read_timeout.or(Some(timeout)))
        .map_err(|e| connect_error(url, timeout, &e))?;
    con.set_write_timeout(Some(timeout))
        .map_err(|e| connect_error(url, timeout, &e))?;
    redis::cmd("PING")
        .query::<()>(&mut con)
        .map_err(|e| connect_error(url, timeout, &e))?;
    Ok(con)
}

/// Redis's `run_id`: a new one means the server restarted (and may have
/// lost its last second of writes).
pub(crate) fn run_id(con: &mut Connection) -> String {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(con)
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Creates the consumer group (and the stream) if missing. Reads start at
/// the stream's beginning, so tasks queued before any worker are not missed.
pub(crate) fn ensure_group(con: &mut Connection, keys: &Keys) -> redis::RedisResult<()> {
    let r: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys.tasks)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query(con);
    match r {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        r => r,
    }
}

/// Exponential backoff with jitter: 50 ms doubling up to `cap`, ±50%.
pub(crate) fn backoff(attempt: u32, cap: Duration) -> Duration {
    let base = Duration::from_millis(50).saturating_mul(1u32 << attempt.min(16));
    let base = base.min(cap);
    let jitter = 0.5 + (random() % 1000) as f64 / 1000.0;
    base.mul_f64(jitter)
}

/// A cheap random number (xorshift, seeded per thread from time and pid).
pub(crate) fn random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            (t ^ (u64::from(std::process::id()) << 32)) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reconnects with backoff until it works, `stop()` says stop, or
/// `give_up` passes (then the last error).
pub(crate) fn reconnect(
    client: &Client,
    url: &str,
    timeout: Duration,
    read_timeout: Option<Duration>,
    give_up: Option<Instant>,
    stop: &dyn Fn() -> bool,
) -> Result<Connection> {
    let mut attempt = 0;
    loop {
        match connect(client, url, timeout, read_timeout) {
            Ok(c) => return Ok(c),
            Err(e) => {
                if stop() || give_up.is_some_and(|g| Instant::now() >= g) {
                    return Err(e);
                }
                std::thread::sleep(backoff(attempt, Duration::from_secs(1)));
                attempt += 1;
            }
        }
    }
}

/// A field of a stream entry as bytes.
pub(crate) fn field<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

/// A stream entry: its id and its fields.
pub(crate) type Entry = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// Parses the entries of one stream out of an XRANGE / XREADGROUP /
/// XAUTOCLAIM reply (`[[id, [k, v, …]], …]`); deleted entries (nil fields)
/// come back with no fields.
pub(crate) fn parse_entries(v: &redis::Value) -> Vec<Entry> {
    let mut out = Vec::new();
    if let redis::Value::Array(items) = v {
        for item in items {
            if let redis::Value::Array(pair) = item
                && pair.len() == 2
            {
                let id = as_string(&pair[0]);
                let mut fields = Vec::new();
                if let redis::Value::Array(kv) = &pair[1] {
                    for chunk in kv.chunks(2) {
                        if let [k, v] = chunk {
                            fields.push((as_bytes(k), as_bytes(v)));
                        }
                    }
                }
                out.push((id, fields));
            }
        }
    }
    out
}

pub(crate) fn as_bytes(v: &redis::Value) -> Vec<u8> {
    match v {
        redis::Value::BulkString(b) => b.clone(),
        redis::Value::SimpleString(s) => s.as_bytes().to_vec(),
        redis::Value::Int(i) => i.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

pub(crate) fn as_string(v: &redis::Value) -> String {
    String::from_utf8_lossy(&as_bytes(v)).into_owned()
}

pub(crate) fn as_int(v: &redis::Value) -> i64 {
    match v {
        redis::Value::Int(i) => *i,
        other => as_string(other).parse().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("redis://:pw@h:1/"), "redis://:***@h:1/");
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://h:1/"), "redis://h:1/");
    }
}
