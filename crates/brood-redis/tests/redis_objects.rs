//! Shared objects on Redis, exercised by real processes (brood `Process`
//! children) against a private `redis-server`: ordering, mutual exclusion,
//! holders killed or stopped mid-hold, wake-ups across processes, atomic
//! updates, and clear errors for a wrong password or an unreachable Redis.

use std::time::{Duration, Instant};

use brood::{ErrorKind, Process};
use brood_redis::LocalServer;
use brood_redis::objects::{Dict, Event, List, Lock, Queue, Semaphore, Target, Value};

fn server() -> LocalServer {
    LocalServer::start().expect("redis-server (the test command installs it)")
}

#[test]
fn a_queue_passes_items_between_processes_in_order() {
    let server = server();
    let url = server.url();
    let q = Queue::<(u32, String)>::new(url.as_str(), "jobs").unwrap();
    let back = Queue::<u32>::new(url.as_str(), "back").unwrap();
    let mut child = Process::with_args(
        |url: String| {
            let q = Queue::<(u32, String)>::new(url.as_str(), "jobs").unwrap();
            let back = Queue::<u32>::new(url.as_str(), "back").unwrap();
            let mut got = Vec::new();
            for _ in 0..1000 {
                let (i, s) = q.get_timeout(Duration::from_secs(20)).unwrap();
                assert_eq!(s, format!("item {i}"));
                back.put(&i).unwrap();
                got.push(i);
            }
            got
        },
        url.clone(),
    );
    child.start().unwrap();
    q.put_many((0..500).map(|i| (i, format!("item {i}"))))
        .unwrap();
    for i in 500..1000 {
        q.put(&(i, format!("item {i}"))).unwrap();
    }
    let got = child.join().unwrap();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    let echoed: Vec<u32> = (0..1000).map(|_| back.get_nowait().unwrap()).collect();
    assert_eq!(echoed, (0..1000).collect::<Vec<_>>());
    assert!(q.empty().unwrap() && back.empty().unwrap());
}

#[test]
fn a_queue_has_pythons_empty_and_full() {
    let server = server();
    let url = server.url();
    let q = Queue::<u8>::bounded(url.as_str(), "b", 2).unwrap();
    let err = q.get_nowait().unwrap_err();
    assert!(err.is_empty() && err.kind() == ErrorKind::Timeout, "{err}");
    let t = Instant::now();
    assert!(
        q.get_timeout(Duration::from_millis(200))
            .unwrap_err()
            .is_empty()
    );
    assert!(t.elapsed() >= Duration::from_millis(190));
    q.put(&1).unwrap();
    q.put_nowait(&2).unwrap();
    assert!(q.full().unwrap());
    let err = q.put_nowait(&3).unwrap_err();
    assert!(err.is_full() && err.kind() == ErrorKind::Timeout, "{err}");
    assert!(
        q.put_timeout(&3, Duration::from_millis(50))
            .unwrap_err()
            .is_full()
    );
    // Another process attaching by name obeys the same bound.
    let other = Queue::<u8>::new(url.as_str(), "b").unwrap();
    assert_eq!(other.maxsize().unwrap(), 2);
    assert!(other.put_nowait(&3).unwrap_err().is_full());
    assert_eq!(
        Queue::<u8>::bounded(url.as_str(), "b", 5)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidState
    );
    // A put waiting for room goes in once a getter makes room.
    let mut getter = Process::with_args(
        |url: String| {
            std::thread::sleep(Duration::from_millis(100));
            Queue::<u8>::new(url.as_str(), "b").unwrap().get().unwrap()
        },
        url.clone(),
    );
    getter.start().unwrap();
    q.put_timeout(&3, Duration::from_secs(20)).unwrap();
    assert_eq!(getter.join().unwrap(), 1);
    assert_eq!(
        (q.get().unwrap(), q.get().unwrap()),
        (2, 3),
        "FIFO across processes"
    );
    // A value of another type is a codec error, not a panic; it is gone.
    Queue::<String>::new(url.as_str(), "b")
        .unwrap()
        .put(&"not a u8".into())
        .unwrap();
    assert_eq!(q.get().unwrap_err().kind(), ErrorKind::Codec);
}

#[test]
fn a_dict_and_a_list_are_shared_by_name_across_processes() {
    let server = server();
    let url = server.url();
    let mut children = Vec::new();
    for i in 0..4u32 {
        let mut p = Process::with_args(
            |(url, i): (String, u32)| {
                let d = Dict::<String, u32>::new(url.as_str(), "d").unwrap();
                let l = List::<u32>::new(url.as_str(), "l").unwrap();
                for j in 0..25 {
                    d.insert(&format!("p{i}-{j}"), &(i * 100 + j)).unwrap();
                    l.push(&(i * 100 + j)).unwrap();
                }
            },
            (url.clone(), i),
        );
        p.start().unwrap();
        children.push(p);
    }
    for mut p in children {
        p.join().unwrap();
    }
    let d = Dict::<String, u32>::new(url.as_str(), "d").unwrap();
    let l = List::<u32>::new(url.as_str(), "l").unwrap();
    assert_eq!(d.len().unwrap(), 100);
    assert_eq!(d.get(&"p3-24".into()).unwrap(), Some(324));
    assert_eq!(d.insert(&"p3-24".into(), &0).unwrap(), Some(324));
    assert_eq!(d.remove(&"p3-24".into()).unwrap(), Some(0));
    assert_eq!(d.setdefault(&"new".into(), &9).unwrap(), 9);
    let mut items = l.to_vec().unwrap();
    assert_eq!(items.len(), 100);
    for i in 0..4 {
        let mine: Vec<u32> = items.iter().copied().filter(|x| x / 100 == i).collect();
        assert_eq!(mine, (0..25).map(|j| i * 100 + j).collect::<Vec<_>>());
    }
    items.sort();
    items.dedup();
    assert_eq!(items.len(), 100);
    assert_eq!(
        l.get(1000).unwrap_err().kind(),
        ErrorKind::InvalidState,
        "Python's IndexError"
    );
    l.set(-1, &7).unwrap();
    assert_eq!(l.pop().unwrap(), 7);
}

fn add_under_lock((url, rounds): (String, u32)) -> u32 {
    let lock = Lock::new(url.as_str(), "counter").unwrap();
    let counter = Dict::<String, u64>::new(url.as_str(), "counter").unwrap();
    for _ in 0..rounds {
        let _held = lock.lock().unwrap();
        // Read, then write: without the lock, increments are lost.
        let n = counter.get(&"n".into()).unwrap().unwrap_or(0);
        counter.insert(&"n".into(), &(n + 1)).unwrap();
    }
    rounds
}

#[test]
fn a_lock_excludes_other_processes_and_no_increment_is_lost() {
    let server = server();
    let url = server.url();
    let start = Instant::now();
    let mut children = Vec::new();
    for _ in 0..4 {
        let mut p = Process::with_args(add_under_lock, (url.clone(), 50));
        p.start().unwrap();
        children.push(p);
    }
    for mut p in children {
        assert_eq!(p.join().unwrap(), 50);
    }
    let counter = Dict::<String, u64>::new(url.as_str(), "counter").unwrap();
    assert_eq!(counter.get(&"n".into()).unwrap(), Some(200));
    let lock = Lock::new(url.as_str(), "counter").unwrap();
    assert!(!lock.locked().unwrap());
    assert!(start.elapsed() < Duration::from_secs(60));
    // A release without a hold is an error (Python's RuntimeError). Not
    // reentrant: a timed or non-blocking second acquire answers false as
    // in Python; an untimed one is an error where Python deadlocks.
    assert_eq!(lock.release().unwrap_err().kind(), ErrorKind::InvalidState);
    lock.acquire().unwrap();
    let t = Instant::now();
    assert!(!lock.acquire_timeout(Duration::from_millis(100)).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(90));
    assert!(!lock.try_acquire().unwrap());
    assert_eq!(lock.acquire().unwrap_err().kind(), ErrorKind::InvalidState);
    assert!(
        lock.acquire_timeout(Duration::MAX).is_err(),
        "MAX: no limit"
    );
    let first = lock.token().unwrap();
    lock.release().unwrap();
    let second = lock.lock().unwrap().token();
    assert!(second > first, "fencing tokens grow: {first} then {second}");
}

#[test]
fn a_sigkilled_holders_lock_is_released_after_its_lease() {
    let server = server();
    let url = server.url();
    let held = Event::new(url.as_str(), "held").unwrap();
    let mut holder = Process::with_args(
        |url: String| {
            let lock = Lock::with_lease(url.as_str(), "l", Duration::from_secs(2)).unwrap();
            lock.acquire().unwrap();
            Event::new(url.as_str(), "held").unwrap().set().unwrap();
            // Held well past the lease: the heartbeat keeps it.
            std::thread::sleep(Duration::from_secs(60));
        },
        url.clone(),
    );
    holder.start().unwrap();
    assert!(held.wait_timeout(Duration::from_secs(20)).unwrap());
    let lock = Lock::new(url.as_str(), "l").unwrap();
    // Still held past its lease (2 s): the holder's heartbeat renews it
    // every 667 ms, so a loaded machine may starve it a while.
    assert!(!lock.acquire_timeout(Duration::from_secs(3)).unwrap());
    holder.kill().unwrap();
    let killed = Instant::now();
    assert!(lock.acquire_timeout(Duration::from_secs(20)).unwrap());
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "took {:?}",
        killed.elapsed()
    );
    assert!(holder.join().is_err());
}

#[test]
fn a_stale_holders_fencing_token_is_rejected() {
    let server = server();
    let url = server.url();
    let held = Event::new(url.as_str(), "held").unwrap();
    let go = Event::new(url.as_str(), "go").unwrap();
    let value = Value::new(url.as_str(), "v", &String::new()).unwrap();
    let mut stale = Process::with_args(
        |url: String| {
            let lock = Lock::with_lease(url.as_str(), "l", Duration::from_millis(600)).unwrap();
            let value = Value::new(url.as_str(), "v", &String::new()).unwrap();
            lock.acquire().unwrap();
            let token = lock.token().unwrap();
            value.set_fenced(&"first holder".into(), token).unwrap();
            Event::new(url.as_str(), "held").unwrap().set().unwrap();
            // The parent SIGSTOPs this process here, past its lease.
            Event::new(url.as_str(), "go").unwrap().wait().unwrap();
            let write = value.set_fenced(&"stale write".into(), token).unwrap_err();
            let release = lock.release().unwrap_err();
            (token, write.kind(), write.to_string(), release.kind())
        },
        url.clone(),
    );
    stale.start().unwrap();
    assert!(held.wait_timeout(Duration::from_secs(20)).unwrap());
    let pid = stale.pid().unwrap();
    brood::os::kill(pid, libc::SIGSTOP).unwrap();
    let lock = Lock::new(url.as_str(), "l").unwrap();
    assert!(lock.acquire_timeout(Duration::from_secs(20)).unwrap());
    let mine = lock.token().unwrap();
    value.set_fenced(&"second holder".into(), mine).unwrap();
    brood::os::kill(pid, libc::SIGCONT).unwrap();
    go.set().unwrap();
    let (theirs, write, message, release) = stale.join().unwrap();
    assert!(mine > theirs);
    assert_eq!(write, ErrorKind::InvalidState, "{message}");
    assert!(message.contains("stale fencing token"), "{message}");
    assert_eq!(release, ErrorKind::InvalidState);
    assert_eq!(value.get().unwrap(), "second holder");
    // The new holder still holds the lock: the stale release freed nothing.
    assert!(lock.locked().unwrap());
    lock.release().unwrap();
}

#[test]
fn a_dead_holders_semaphore_permit_comes_back() {
    let server = server();
    let url = server.url();
    let held = Event::new(url.as_str(), "held").unwrap();
    let sem = Semaphore::new(url.as_str(), "s", 2).unwrap();
    let mut holder = Process::with_args(
        |url: String| {
            let sem = Semaphore::with_lease(url.as_str(), "s", 2, Duration::from_secs(2)).unwrap();
            sem.acquire().unwrap();
            sem.acquire().unwrap();
            Event::new(url.as_str(), "held").unwrap().set().unwrap();
            std::thread::sleep(Duration::from_secs(60));
        },
        url.clone(),
    );
    holder.start().unwrap();
    assert!(held.wait_timeout(Duration::from_secs(20)).unwrap());
    assert_eq!(sem.value().unwrap(), 0);
    // Renewed past its lease by the holder's heartbeat.
    assert!(!sem.acquire_timeout(Duration::from_secs(3)).unwrap());
    holder.kill().unwrap();
    let killed = Instant::now();
    assert!(sem.acquire_timeout(Duration::from_secs(20)).unwrap());
    assert!(sem.acquire_timeout(Duration::from_secs(20)).unwrap());
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "took {:?}",
        killed.elapsed()
    );
    assert!(!sem.try_acquire().unwrap(), "bounded: two permits");
    assert_eq!(sem.held_permits(), 2);
    sem.release().unwrap();
    sem.release().unwrap();
    assert_eq!(sem.release().unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(sem.value().unwrap(), 2);
    assert!(holder.join().is_err());
    assert_eq!(
        Semaphore::new(url.as_str(), "s", 3).unwrap_err().kind(),
        ErrorKind::InvalidState
    );
}

#[test]
fn a_semaphore_bounds_how_many_processes_are_inside_at_once() {
    let server = server();
    let url = server.url();
    let mut children = Vec::new();
    for _ in 0..4 {
        let mut p = Process::with_args(
            |url: String| {
                let sem = Semaphore::new(url.as_str(), "two", 2).unwrap();
                let inside = Value::new(url.as_str(), "inside", &0i64).unwrap();
                let most = Value::new(url.as_str(), "most", &0i64).unwrap();
                for _ in 0..10 {
                    sem.acquire().unwrap();
                    let now = inside.update(|n| n + 1).unwrap();
                    most.update(|m| m.max(now)).unwrap();
                    std::thread::sleep(Duration::from_millis(5));
                    inside.update(|n| n - 1).unwrap();
                    sem.release().unwrap();
                }
            },
            url.clone(),
        );
        p.start().unwrap();
        children.push(p);
    }
    for mut p in children {
        p.join().unwrap();
    }
    let most = Value::new(url.as_str(), "most", &0i64)
        .unwrap()
        .get()
        .unwrap();
    assert!((1..=2).contains(&most), "{most} inside at once");
    let sem = Semaphore::new(url.as_str(), "two", 2).unwrap();
    assert_eq!(sem.value().unwrap(), 2);
}

#[test]
fn an_event_wakes_waiters_in_other_processes() {
    let server = server();
    let url = server.url();
    let ready = Queue::<u32>::new(url.as_str(), "ready").unwrap();
    let event = Event::new(url.as_str(), "go").unwrap();
    let mut waiters = Vec::new();
    for i in 0..3u32 {
        let mut p = Process::with_args(
            |(url, i): (String, u32)| {
                let event = Event::new(url.as_str(), "go").unwrap();
                Queue::<u32>::new(url.as_str(), "ready")
                    .unwrap()
                    .put(&i)
                    .unwrap();
                let t = Instant::now();
                let woke = event.wait_timeout(Duration::from_secs(30)).unwrap();
                (woke, t.elapsed())
            },
            (url.clone(), i),
        );
        p.start().unwrap();
        waiters.push(p);
    }
    for _ in 0..3 {
        ready.get_timeout(Duration::from_secs(20)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(!event.is_set().unwrap());
    let set = Instant::now();
    event.set().unwrap();
    for mut p in waiters {
        let (woke, waited) = p.join().unwrap();
        assert!(woke);
        assert!(waited < Duration::from_secs(20), "waited {waited:?}");
    }
    assert!(set.elapsed() < Duration::from_secs(10));
    event.clear().unwrap();
    assert!(!event.wait_timeout(Duration::from_millis(50)).unwrap());
}

#[test]
fn a_values_atomic_updates_from_several_processes_lose_nothing() {
    let server = server();
    let url = server.url();
    let total = Value::new(url.as_str(), "total", &0u64).unwrap();
    let mut children = Vec::new();
    for _ in 0..4 {
        let mut p = Process::with_args(
            |url: String| {
                let total = Value::new(url.as_str(), "total", &0u64).unwrap();
                for _ in 0..200 {
                    total.update(|n| n + 1).unwrap();
                }
            },
            url.clone(),
        );
        p.start().unwrap();
        children.push(p);
    }
    for mut p in children {
        p.join().unwrap();
    }
    assert_eq!(total.get().unwrap(), 800);
    // Another type under the same name is a codec error.
    let wrong = Value::new(url.as_str(), "total", &String::new()).unwrap();
    assert_eq!(wrong.get().unwrap_err().kind(), ErrorKind::Codec);
}

#[test]
fn a_wrong_password_or_an_unreachable_redis_is_a_clear_error_in_time() {
    let server = LocalServer::start_with_password(Some("right")).unwrap();
    let port = server.port();

    let t = Instant::now();
    let err = Queue::<u8>::new(format!("redis://:hunter2@127.0.0.1:{port}/"), "q").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        !err.to_string().contains("hunter2"),
        "no password in: {err}"
    );

    let err = Lock::new(format!("redis://127.0.0.1:{port}/"), "l").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "missing password: {err}");
    assert!(Lock::new(server.url(), "l").is_ok());

    // Nobody listens: refused at once.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = free.local_addr().unwrap().port();
    drop(free);
    let err = Event::new(format!("redis://127.0.0.1:{dead}/"), "e").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().contains("cannot reach redis"), "{err}");
    assert!(err.to_string().contains(&dead.to_string()), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );

    // Something listens but never answers: the connect timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = Target::new(&format!("redis://{}/", silent.local_addr().unwrap()))
        .unwrap()
        .connect_timeout(Duration::from_millis(500));
    let t = Instant::now();
    let err = Dict::<u8, u8>::new(target, "d").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn a_redis_that_dies_mid_run_is_an_error_and_a_restart_is_picked_up() {
    let mut server = server();
    let url = server.url();
    let q = Queue::<u32>::new(
        Target::new(&url)
            .unwrap()
            .connect_timeout(Duration::from_secs(1)),
        "q",
    )
    .unwrap();
    q.put(&1).unwrap();
    server.kill();
    let t = Instant::now();
    let err = q.get().unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Closed | ErrorKind::Io),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    server.restart().unwrap();
    // The next call connects anew (what survived is what the AOF held).
    q.put(&2).unwrap();
    assert!(q.qsize().unwrap() >= 1);
}
