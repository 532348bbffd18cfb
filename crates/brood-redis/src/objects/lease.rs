//! The heartbeat behind `Lock` and `Semaphore`: while a lease is held, a
//! thread renews it every third of its length; when the holder process dies
//! the renewals stop and the lease lapses in Redis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Conn;

/// Renews one lease until stopped, or until a renewal finds it gone.
pub(crate) struct Keeper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    lost: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pid: u32,
}

impl Keeper {
    /// Starts the thread; `renew` answers whether the lease was still ours
    /// (and is now extended).
    pub(crate) fn start(
        conn: Conn,
        lease: Duration,
        renew: impl Fn(&mut redis::Connection) -> redis::RedisResult<bool> + Send + 'static,
    ) -> Keeper {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let lost = Arc::new(AtomicBool::new(false));
        let every = (lease / 3).max(Duration::from_millis(10));
        let thread = {
            let (stop, lost) = (stop.clone(), lost.clone());
            std::thread::Builder::new()
                .name("brood-redis-lease".into())
                .spawn(move || {
                    loop {
                        {
                            let (m, cv) = &*stop;
                            let guard = m.lock().unwrap_or_else(PoisonError::into_inner);
                            let (guard, _) = cv
                                .wait_timeout_while(guard, every, |stopped| !*stopped)
                                .unwrap_or_else(PoisonError::into_inner);
                            if *guard {
                                return;
                            }
                        }
                        match conn.call("renewing a lease", &renew) {
                            Ok(true) => {}
                            Ok(false) => {
                                lost.store(true, Ordering::SeqCst);
                                return;
                            }
                            // Redis unreachable: keep trying; if the lease
                            // lapses meanwhile, the next renewal says so.
                            Err(_) => {}
                        }
                    }
                })
                .ok()
        };
        Keeper {
            stop,
            lost,
            thread,
            pid: std::process::id(),
        }
    }

    /// Whether a renewal found the lease gone (it lapsed: the process was
    /// stopped, or Redis was unreachable, for longer than the lease).
    pub(crate) fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            // A forked child's copy: the thread lives in the parent only.
            if let Some(t) = self.thread.take() {
                std::mem::forget(t);
            }
            return;
        }
        {
            let (m, cv) = &*self.stop;
            *m.lock().unwrap_or_else(PoisonError::into_inner) = true;
            cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A holder id unique across processes and machines (pid, time, a random
/// seed, a counter).
pub(crate) fn holder_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!(
        "{}-{:016x}-{}",
        std::process::id(),
        h.finish(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
