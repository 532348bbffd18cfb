//! The shared-objects-on-Redis table: brood-redis's `objects` (Queue, Dict,
//! Lock, Value on a private `redis-server`) against brood's own `Manager`
//! proxies (one machine) here, and Python's `Manager()` proxies and raw
//! redis-py calls in `bench/python/redis_objects.py` (same tests, same
//! counts).
//!
//! - `queue`: one `put` + one `get` from one process; µs per pair.
//! - `dict`: one `insert` + one `get`; µs per pair.
//! - `lock`: one `acquire` + one `release` of an uncontended lock; µs.
//! - `value`: one atomic `+= 1` (`Value::update`; Python: `with
//!   v.get_lock()`-style lock held around `v.value += 1`); µs.
//!
//! 500 warm-up pairs, then 5000 timed one by one: median, p10, p90. Prints
//! `robj<TAB>test<TAB>name<TAB>median_us<TAB>p10_us<TAB>p90_us<TAB>n`.

use std::time::Instant;

use brood::Manager;
use brood_redis::LocalServer;
use brood_redis::objects::{Dict, Lock, Queue, Value};

use crate::{percentile, selected};

const PAIRS: usize = 5_000;
const WARMUP: usize = 500;

fn emit(test: &str, name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    println!(
        "robj\t{test}\t{name}\t{:.3}\t{:.3}\t{:.3}\t{}",
        percentile(&v, 0.5),
        percentile(&v, 0.1),
        percentile(&v, 0.9),
        v.len()
    );
}

fn time_pairs(mut pair: impl FnMut(u64)) -> Vec<f64> {
    for i in 0..WARMUP {
        pair(i as u64);
    }
    (0..PAIRS)
        .map(|i| {
            let t = Instant::now();
            pair(i as u64);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

pub(crate) fn row_names() -> impl Iterator<Item = &'static str> {
    [
        "queue: brood-redis Queue put + get",
        "queue: brood ManagedQueue put + get (one machine)",
        "dict: brood-redis Dict insert + get",
        "dict: brood ManagedMap insert + get (one machine)",
        "lock: brood-redis Lock acquire + release",
        "lock: brood ManagedLock acquire + release (one machine)",
        "value: brood-redis Value update(+1)",
        "value: brood ManagedValue + ManagedLock, += 1 under the lock (one machine)",
    ]
    .into_iter()
}

pub(crate) fn run(only: Option<&str>) {
    if !LocalServer::available() {
        eprintln!("redis-objects: no redis-server on PATH (apt-get install redis-server); skipped");
        return;
    }
    let server = LocalServer::start().unwrap();
    let url = server.url();
    let manager = Manager::start().unwrap();
    let t = "redis-objects";

    let name = "brood-redis Queue put + get";
    if selected(only, &format!("{t} queue"), name) {
        let q = Queue::<u64>::new(url.as_str(), "bench-queue").unwrap();
        let v = time_pairs(|i| {
            q.put(&i).unwrap();
            assert_eq!(q.get().unwrap(), i);
        });
        emit("queue", name, v);
    }
    let name = "brood ManagedQueue put + get (one machine)";
    if selected(only, &format!("{t} queue"), name) {
        let q = manager.queue::<u64>(0).unwrap();
        let v = time_pairs(|i| {
            q.put(&i).unwrap();
            assert_eq!(q.get().unwrap(), i);
        });
        emit("queue", name, v);
    }

    let name = "brood-redis Dict insert + get";
    if selected(only, &format!("{t} dict"), name) {
        let d = Dict::<u64, u64>::new(url.as_str(), "bench-dict").unwrap();
        let v = time_pairs(|i| {
            d.insert(&i, &i).unwrap();
            assert_eq!(d.get(&i).unwrap(), Some(i));
        });
        emit("dict", name, v);
    }
    let name = "brood ManagedMap insert + get (one machine)";
    if selected(only, &format!("{t} dict"), name) {
        let d = manager.dict::<u64, u64>().unwrap();
        let v = time_pairs(|i| {
            d.insert(&i, &i).unwrap();
            assert_eq!(d.get(&i).unwrap(), Some(i));
        });
        emit("dict", name, v);
    }

    let name = "brood-redis Lock acquire + release";
    if selected(only, &format!("{t} lock"), name) {
        let lock = Lock::new(url.as_str(), "bench-lock").unwrap();
        let v = time_pairs(|_| {
            lock.acquire().unwrap();
            lock.release().unwrap();
        });
        emit("lock", name, v);
    }
    let name = "brood ManagedLock acquire + release (one machine)";
    if selected(only, &format!("{t} lock"), name) {
        let lock = manager.lock().unwrap();
        let v = time_pairs(|_| {
            lock.acquire().unwrap();
            lock.release().unwrap();
        });
        emit("lock", name, v);
    }

    let name = "brood-redis Value update(+1)";
    if selected(only, &format!("{t} value"), name) {
        let value = Value::new(url.as_str(), "bench-value", &0u64).unwrap();
        let v = time_pairs(|_| {
            value.update(|n| n + 1).unwrap();
        });
        assert_eq!(value.get().unwrap(), (WARMUP + PAIRS) as u64);
        emit("value", name, v);
    }
    let name = "brood ManagedValue + ManagedLock, += 1 under the lock (one machine)";
    if selected(only, &format!("{t} value"), name) {
        let value = manager.value(&0u64).unwrap();
        let lock = manager.lock().unwrap();
        let v = time_pairs(|_| {
            let _held = lock.lock().unwrap();
            value.set(&(value.get().unwrap() + 1)).unwrap();
        });
        assert_eq!(value.get().unwrap(), (WARMUP + PAIRS) as u64);
        emit("value", name, v);
    }
}
