//! Managers: shared objects in a server process, exercised by real
//! processes, hostile clients, and killed servers and clients.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use brood::connection::{Address, Client};
use brood::manager::{ManagedList, ManagedLock, ManagedMap, ManagedQueue};
use brood::{ErrorKind, Manager, Process, StartMethod};

const ROUNDS: u32 = 100;

type Shared = (
    u32,
    ManagedMap<String, u64>,
    ManagedList<(u32, u32)>,
    ManagedLock,
);

fn update_under_lock((i, counts, log, lock): Shared) {
    for j in 0..ROUNDS {
        let _held = lock.lock().unwrap();
        let total = counts.get(&"total".into()).unwrap().unwrap_or(0);
        counts.insert(&"total".into(), &(total + 1)).unwrap();
        let mine = counts.get(&format!("p{i}")).unwrap().unwrap_or(0);
        counts.insert(&format!("p{i}"), &(mine + 1)).unwrap();
        log.push(&(i, j)).unwrap();
    }
}

fn eight_processes(method: StartMethod) {
    let start = Instant::now();
    let manager = Manager::start().unwrap();
    let counts = manager.dict::<String, u64>().unwrap();
    let log = manager.list::<(u32, u32)>().unwrap();
    let lock = manager.lock().unwrap();
    let mut children = Vec::new();
    for i in 0..8u32 {
        let mut p = Process::builder().start_method(method).target_with(
            update_under_lock,
            (i, counts.clone(), log.clone(), lock.clone()),
        );
        p.start().unwrap();
        children.push(p);
    }
    for mut p in children {
        p.join().unwrap();
    }
    assert_eq!(
        counts.get(&"total".into()).unwrap(),
        Some(8 * ROUNDS as u64)
    );
    for i in 0..8 {
        assert_eq!(counts.get(&format!("p{i}")).unwrap(), Some(ROUNDS as u64));
    }
    assert_eq!(counts.len().unwrap(), 9);
    let mut entries = log.to_vec().unwrap();
    assert_eq!(entries.len(), 8 * ROUNDS as usize);
    // Each process's entries appear in its own order.
    for i in 0..8 {
        let mine: Vec<u32> = entries.iter().filter(|e| e.0 == i).map(|e| e.1).collect();
        assert_eq!(mine, (0..ROUNDS).collect::<Vec<_>>());
    }
    entries.sort();
    entries.dedup();
    assert_eq!(entries.len(), 8 * ROUNDS as usize);
    assert!(!lock.locked().unwrap());
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn eight_processes_update_one_dict_and_list_exactly_forkserver() {
    eight_processes(StartMethod::ForkServer);
}

#[test]
fn eight_processes_update_one_dict_and_list_exactly_spawn() {
    eight_processes(StartMethod::Spawn);
}

/// The good client's round trip, with a bound.
fn assert_serves(good: &ManagedMap<u32, u32>, n: u32) {
    let t = Instant::now();
    good.insert(&n, &(n * 2)).unwrap();
    assert_eq!(good.get(&n).unwrap(), Some(n * 2));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
}

/// Reads until end-of-file, within `limit`; whether it came.
fn closed_within(mut stream: impl Read, limit: Duration) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[derive(serde::Serialize)]
struct Hello {
    session: u64,
}

/// An authenticated raw connection past the hello, as a `TcpStream`.
fn raw_session(address: &Address, key: &[u8]) -> std::net::TcpStream {
    let mut conn = Client::connect(address, Some(key)).unwrap();
    conn.send(&Hello { session: 7 }).unwrap();
    let _welcome: serde::de::IgnoredAny = conn.recv().unwrap();
    let s = std::net::TcpStream::from(conn.as_fd().try_clone_to_owned().unwrap());
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

#[test]
fn bad_clients_do_not_stop_the_server_serving_a_good_one() {
    let key = b"the right key";
    let server = Manager::serve(&"127.0.0.1:0".parse().unwrap(), key).unwrap();
    let address = server.address().clone();
    let Address::Tcp(tcp) = address else {
        panic!("a TCP address")
    };
    let good_manager = Manager::connect(&address, key).unwrap();
    let good = good_manager.dict::<u32, u32>().unwrap();
    assert_serves(&good, 1);

    // A wrong key: refused with an auth error.
    let err = Manager::connect(&address, b"wrong key").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert_serves(&good, 2);

    // No key: the client sends a message where the digest should be.
    let mut nokey = Client::connect(&address, None).unwrap();
    nokey.send(&"let me in").unwrap();
    let t = Instant::now();
    assert!(
        nokey
            .recv_timeout::<String>(Duration::from_secs(10))
            .is_err()
    );
    assert!(t.elapsed() < Duration::from_secs(6));
    assert_serves(&good, 3);

    // Garbage after the handshake: an error reply, the connection goes on.
    let mut conn = Client::connect(&address, Some(key)).unwrap();
    conn.send(&Hello { session: 8 }).unwrap();
    let _welcome: serde::de::IgnoredAny = conn.recv().unwrap();
    conn.send_bytes(b"\xc1\xc1 not a request").unwrap();
    #[derive(serde::Deserialize, Debug)]
    struct WireError {
        kind: ErrorKind,
        message: String,
    }
    let reply: Result<serde::de::IgnoredAny, WireError> =
        conn.recv_timeout(Duration::from_secs(5)).unwrap();
    let err = reply.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Codec, "{}", err.message);
    // Still usable: an unknown object gets an error reply too.
    conn.send_bytes(b"\x82\xa6object\xcd\x03\xe7\xa2op\xa6MapLen")
        .unwrap();
    let reply: Result<serde::de::IgnoredAny, WireError> =
        conn.recv_timeout(Duration::from_secs(5)).unwrap();
    let err = reply.unwrap_err();
    assert!(err.message.contains("no managed object #999"), "{err:?}");
    // Garbage instead of the hello: the connection is closed.
    let mut conn = Client::connect(&address, Some(key)).unwrap();
    conn.send_bytes(b"\xc1garbage").unwrap();
    assert!(
        conn.recv_timeout::<serde::de::IgnoredAny>(Duration::from_secs(6))
            .is_err()
    );
    assert_serves(&good, 4);

    // A 4 GiB length prefix: the connection is closed, nothing allocated.
    let mut raw = raw_session(&address, key);
    let mut header = (-1i32).to_be_bytes().to_vec();
    header.extend_from_slice(&(4u64 << 30).to_be_bytes());
    raw.write_all(&header).unwrap();
    assert!(closed_within(&raw, Duration::from_secs(5)));
    let mut raw = raw_session(&address, key);
    raw.write_all(&0x7fff_ffffi32.to_be_bytes()).unwrap();
    assert!(closed_within(&raw, Duration::from_secs(5)));
    assert_serves(&good, 5);

    // A client that disconnects mid-request.
    let mut raw = raw_session(&address, key);
    raw.write_all(&1000i32.to_be_bytes()).unwrap();
    raw.write_all(b"\x82\xa6object\x01").unwrap();
    drop(raw);
    assert_serves(&good, 6);

    // 1,000 idle connections: 900 that never authenticate, 100 that do.
    let mut idle = Vec::new();
    for _ in 0..900 {
        idle.push(std::net::TcpStream::connect(tcp).unwrap());
    }
    let mut authed = Vec::new();
    for _ in 0..100 {
        authed.push(raw_session(&address, key));
    }
    assert_serves(&good, 7);
    // A new good client can still connect and work.
    let other = Manager::connect(&address, key).unwrap();
    let t = Instant::now();
    let q = other.named("q").queue::<u32>(0).unwrap();
    q.put(&1).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    assert!(t.elapsed() < Duration::from_secs(2));
    drop(idle);
    drop(authed);
    assert_serves(&good, 8);
    assert_eq!(good.len().unwrap(), 8);
}

#[test]
fn a_killed_server_fails_every_call_within_a_second() {
    let manager = Manager::start().unwrap();
    let d = manager.dict::<u8, u8>().unwrap();
    let l = manager.list::<u8>().unwrap();
    let q = manager.queue::<u8>(0).unwrap();
    let lock = manager.lock().unwrap();
    d.insert(&1, &1).unwrap();
    lock.acquire().unwrap();
    // A call blocked in the server when it dies.
    let blocked = {
        let q = q.clone();
        std::thread::spawn(move || {
            let r = q.get();
            (r, Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let pid = manager.server_pid().unwrap();
    brood::os::kill(pid, libc::SIGKILL).unwrap();
    let killed = Instant::now();
    let (r, at) = blocked.join().unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Closed);
    assert!(at - killed < Duration::from_secs(1));
    let calls: Vec<Box<dyn Fn() -> brood::Result<()>>> = vec![
        Box::new(|| d.get(&1).map(drop)),
        Box::new(|| d.insert(&2, &2).map(drop)),
        Box::new(|| l.push(&1)),
        Box::new(|| q.put(&1)),
        Box::new(|| q.get().map(drop)),
        Box::new(|| lock.release()),
        Box::new(|| manager.dict::<u8, u8>().map(drop)),
    ];
    for call in &calls {
        let t = Instant::now();
        let err = call().unwrap_err();
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t.elapsed()
        );
        assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
        assert!(err.to_string().contains("manager server"), "{err}");
    }
}

#[test]
fn a_lock_held_by_a_killed_client_is_released() {
    let manager = Manager::start().unwrap();
    let lock = manager.lock().unwrap();
    let held = manager.event().unwrap();
    let mut holder = Process::with_args(
        |(lock, held): (ManagedLock, brood::manager::ManagedEvent)| {
            lock.acquire().unwrap();
            held.set().unwrap();
            std::thread::sleep(Duration::from_secs(60));
        },
        (lock.clone(), held.clone()),
    );
    holder.start().unwrap();
    assert!(held.wait_timeout(Duration::from_secs(20)).unwrap());
    assert!(lock.locked().unwrap());
    assert!(!lock.try_acquire().unwrap());
    holder.kill().unwrap();
    let killed = Instant::now();
    assert!(lock.acquire_timeout(Duration::from_secs(10)).unwrap());
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "took {:?}",
        killed.elapsed()
    );
    assert!(holder.join().is_err());
}

#[test]
fn a_client_blocked_in_the_server_that_dies_leaves_no_lock_behind() {
    // The child waits for a lock; killed while waiting, it must not end up
    // holding it once the lock frees.
    let manager = Manager::start().unwrap();
    let lock = manager.lock().unwrap();
    lock.acquire().unwrap();
    let mut waiter = Process::with_args(|lock: ManagedLock| lock.acquire().unwrap(), lock.clone());
    waiter.start().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    waiter.kill().unwrap();
    let _ = waiter.join();
    std::thread::sleep(Duration::from_millis(200));
    lock.release().unwrap();
    assert!(lock.acquire_timeout(Duration::from_secs(5)).unwrap());
}

fn worker((address, key): (String, Vec<u8>)) -> u64 {
    let manager = Manager::connect(&address.parse().unwrap(), &key).unwrap();
    let tasks = manager
        .named("tasks")
        .joinable_queue::<Option<u64>>(0)
        .unwrap();
    let results = manager.named("results").queue::<(u64, u64)>(0).unwrap();
    let mut done = 0;
    while let Some(n) = tasks.get().unwrap() {
        results.put(&(n, n * n)).unwrap();
        tasks.task_done().unwrap();
        done += 1;
    }
    tasks.task_done().unwrap();
    done
}

#[test]
fn two_tcp_workers_take_ten_thousand_tasks_and_return_every_result() {
    const TASKS: u64 = 10_000;
    let start = Instant::now();
    let key = b"master key".to_vec();
    let master = Manager::serve(&"127.0.0.1:0".parse().unwrap(), &key).unwrap();
    let tasks = master
        .named("tasks")
        .joinable_queue::<Option<u64>>(0)
        .unwrap();
    let results = master.named("results").queue::<(u64, u64)>(0).unwrap();
    for n in 0..TASKS {
        tasks.put(&Some(n)).unwrap();
    }
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut p = Process::with_args(worker, (master.address().to_string(), key.clone()));
        p.start().unwrap();
        workers.push(p);
    }
    let mut seen = vec![false; TASKS as usize];
    for _ in 0..TASKS {
        let (n, sq) = results.get_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(sq, n * n);
        assert!(!seen[n as usize], "task {n} twice");
        seen[n as usize] = true;
    }
    for _ in 0..2 {
        tasks.put(&None).unwrap();
    }
    let done: u64 = workers.iter_mut().map(|p| p.join().unwrap()).sum();
    assert_eq!(done, TASKS);
    assert!(tasks.join_timeout(Duration::from_secs(5)).unwrap());
    assert!(tasks.abandoned().unwrap().is_empty());
    assert!(start.elapsed() < Duration::from_secs(90));
}

#[test]
fn a_killed_worker_does_not_block_the_master_and_its_tasks_are_reported() {
    let key = b"master key".to_vec();
    let master = Manager::serve(&"127.0.0.1:0".parse().unwrap(), &key).unwrap();
    let tasks = master
        .named("tasks")
        .joinable_queue::<Option<u64>>(0)
        .unwrap();
    let results = master.named("results").queue::<(u64, u64)>(0).unwrap();
    let took = master.named("took").event().unwrap();
    tasks.put(&Some(41)).unwrap();
    // A worker that takes one task and hangs.
    let mut stuck = Process::with_args(
        |(address, key): (String, Vec<u8>)| {
            let manager = Manager::connect(&address.parse().unwrap(), &key).unwrap();
            let tasks = manager
                .named("tasks")
                .joinable_queue::<Option<u64>>(0)
                .unwrap();
            let _mine = tasks.get().unwrap();
            manager.named("took").event().unwrap().set().unwrap();
            std::thread::sleep(Duration::from_secs(60));
        },
        (master.address().to_string(), key.clone()),
    );
    stuck.start().unwrap();
    assert!(took.wait_timeout(Duration::from_secs(20)).unwrap());
    for n in 0..100 {
        tasks.put(&Some(n)).unwrap();
    }
    tasks.put(&None).unwrap();
    let mut good = Process::with_args(worker, (master.address().to_string(), key.clone()));
    good.start().unwrap();
    assert_eq!(good.join().unwrap(), 100);
    // The stuck worker holds task 41: join waits for it...
    assert!(!tasks.join_timeout(Duration::from_millis(200)).unwrap());
    stuck.kill().unwrap();
    let _ = stuck.join();
    // ...until it dies: then join returns and the task is reported.
    let t = Instant::now();
    assert!(tasks.join_timeout(Duration::from_secs(10)).unwrap());
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(tasks.abandoned().unwrap(), [Some(41)]);
    assert_eq!(results.qsize().unwrap(), 100);
}

#[test]
fn a_proxy_travels_inside_a_value_sent_over_a_connection() {
    let manager = Manager::start().unwrap();
    let q = manager.queue::<String>(0).unwrap();
    let (mut here, there) = brood::pipe(true).unwrap();
    let mut child = Process::with_args(
        |mut conn: brood::Connection| {
            let (greeting, q): (String, ManagedQueue<String>) = conn.recv().unwrap();
            q.put(&format!("{greeting}, back")).unwrap();
        },
        there,
    );
    child.start().unwrap();
    here.send(&("hello".to_string(), q.clone())).unwrap();
    assert_eq!(
        q.get_timeout(Duration::from_secs(20)).unwrap(),
        "hello, back"
    );
    child.join().unwrap();
}

#[test]
fn old_proxies_of_a_restarted_server_get_a_clear_error() {
    let address: Address = format!("@brood-test-restart-{}", std::process::id())
        .parse()
        .unwrap();
    let mut first = Manager::serve(&address, b"k").unwrap();
    let old = first.dict::<u8, u8>().unwrap();
    old.insert(&1, &1).unwrap();
    first.shutdown().unwrap();
    let second = Manager::serve(&address, b"k").unwrap();
    let err = old.get(&1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    assert!(err.to_string().contains("restarted"), "{err}");
    let new = second.dict::<u8, u8>().unwrap();
    assert_eq!(new.get(&1).unwrap(), None);
}

#[test]
fn rlock_owners_and_barriers_across_processes() {
    let manager = Manager::start().unwrap();
    let rlock = manager.rlock().unwrap();
    rlock.acquire().unwrap();
    let mut other = Process::with_args(
        |r: ManagedLock| (r.try_acquire().unwrap(), r.release().is_err()),
        rlock.clone(),
    );
    other.start().unwrap();
    assert_eq!(other.join().unwrap(), (false, true));
    rlock.release().unwrap();
    let barrier = manager.barrier(3).unwrap();
    let mut kids = Vec::new();
    for _ in 0..2 {
        let mut p = Process::with_args(
            |b: brood::manager::ManagedBarrier| b.wait().unwrap(),
            barrier.clone(),
        );
        p.start().unwrap();
        kids.push(p);
    }
    let mut indexes = vec![barrier.wait().unwrap()];
    for mut p in kids {
        indexes.push(p.join().unwrap());
    }
    indexes.sort();
    assert_eq!(indexes, [0, 1, 2]);
}

#[test]
fn a_condition_wakes_waiters_in_other_processes_and_arrays_keep_their_length() {
    use brood::manager::{ManagedCondition, ManagedValue};
    let manager = Manager::start().unwrap();
    let cond = manager.condition().unwrap();
    let go = manager.value(&false).unwrap();
    let waiting = manager.semaphore(0).unwrap();
    let mut kids = Vec::new();
    for _ in 0..3 {
        let mut p = Process::with_args(
            |(cond, go, waiting): (
                ManagedCondition,
                ManagedValue<bool>,
                brood::manager::ManagedSemaphore,
            )| {
                let _held = cond.lock().unwrap();
                waiting.release().unwrap();
                cond.wait_for(|| go.get().unwrap(), Duration::from_secs(30))
                    .unwrap()
            },
            (cond.clone(), go.clone(), waiting.clone()),
        );
        p.start().unwrap();
        kids.push(p);
    }
    for _ in 0..3 {
        assert!(waiting.acquire_timeout(Duration::from_secs(20)).unwrap());
    }
    {
        let _held = cond.lock().unwrap();
        go.set(&true).unwrap();
        cond.notify_all().unwrap();
    }
    let t = Instant::now();
    for mut p in kids {
        assert!(p.join().unwrap());
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    // Waiting without the lock is refused.
    assert_eq!(cond.wait().unwrap_err().kind(), ErrorKind::InvalidState);

    let array = manager.array(&[1u32, 2, 3]).unwrap();
    array.set(-1, &30).unwrap();
    assert_eq!(array.to_vec().unwrap(), [1, 2, 30]);
    assert!(array.set(3, &0).is_err());
    assert_eq!(array.len().unwrap(), 3);
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Inventory {
    stock: std::collections::BTreeMap<String, u32>,
}

impl Inventory {
    fn add(&mut self, item: String, n: u32) -> u32 {
        let total = self.stock.entry(item).or_default();
        *total += n;
        *total
    }
    fn take(&mut self, item: String, n: u32) -> Result<u32, String> {
        let total = self.stock.entry(item.clone()).or_default();
        if *total < n {
            return Err(format!("only {total} {item} left"));
        }
        *total -= n;
        Ok(*total)
    }
    fn count(&self, item: String) -> u32 {
        self.stock.get(&item).copied().unwrap_or(0)
    }
    fn explode(&self) {
        panic!("on purpose");
    }
}

brood::shared_object! {
    /// An inventory held by the manager's server.
    pub struct InventoryProxy for Inventory {
        fn add(&mut self, item: String, n: u32) -> u32;
        fn take(&mut self, item: String, n: u32) -> Result<u32, String>;
        fn count(&self, item: String) -> u32;
        fn explode(&self);
    }
}

#[test]
fn a_custom_shared_object_is_typed_on_both_ends() {
    let manager = Manager::start().unwrap();
    let inv: InventoryProxy = manager.named("inv").shared(&Inventory::default()).unwrap();
    let mut kids = Vec::new();
    for _ in 0..4 {
        let mut p = Process::with_args(
            |inv: InventoryProxy| {
                for _ in 0..50 {
                    inv.add("apples".into(), 2).unwrap();
                }
            },
            inv.clone(),
        );
        p.start().unwrap();
        kids.push(p);
    }
    for mut p in kids {
        p.join().unwrap();
    }
    assert_eq!(inv.count("apples".into()).unwrap(), 400);
    assert_eq!(inv.take("apples".into(), 1).unwrap(), Ok(399));
    assert_eq!(
        inv.take("pears".into(), 1).unwrap(),
        Err("only 0 pears left".to_string())
    );
    // A panic in a method is an error reply; the server goes on.
    assert_eq!(inv.explode().unwrap_err().kind(), ErrorKind::Panicked);
    assert_eq!(inv.count("apples".into()).unwrap(), 399);
    // The same name with another kind is refused.
    assert!(manager.named("inv").dict::<u8, u8>().is_err());
}

#[test]
fn a_server_starts_with_spawn_and_forkserver_and_serves_on_a_unix_path() {
    for method in [StartMethod::Spawn, StartMethod::ForkServer] {
        let manager = Manager::start_with(method).unwrap();
        let d = manager.dict::<String, u8>().unwrap();
        d.insert(&"k".into(), &1).unwrap();
        assert_eq!(d.get(&"k".into()).unwrap(), Some(1));
    }
    let dir = std::env::temp_dir().join(format!("brood-manager-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.sock");
    let address = Address::Unix(path.clone());
    let mut server = Manager::serve(&address, b"unix key").unwrap();
    let client = Manager::connect(&address, b"unix key").unwrap();
    client.named("n").namespace().unwrap().set("x", &3).unwrap();
    assert_eq!(
        server
            .named("n")
            .namespace()
            .unwrap()
            .get::<i32>("x")
            .unwrap(),
        Some(3)
    );
    server.shutdown().unwrap();
    assert!(!path.exists(), "the socket file is removed");
    assert!(Manager::connect(&address, b"unix key").is_err());
    // The address can be served again.
    drop(Manager::serve(&address, b"unix key").unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn pipelined_puts_keep_their_order_and_reach_other_processes() {
    let manager = Manager::start().unwrap();
    let q = manager.queue::<u32>(0).unwrap();
    for i in 0..1000 {
        q.put_pipelined(&i).unwrap();
    }
    // This thread's next call runs after them.
    assert_eq!(q.qsize().unwrap(), 1000);
    assert_eq!(q.get().unwrap(), 0);
    // A child's pipelined puts all arrive, even though it exits at once.
    let mut child = Process::with_args(
        |q: ManagedQueue<u32>| {
            for i in 1000..2000 {
                q.put_pipelined(&i).unwrap();
            }
        },
        q.clone(),
    );
    child.start().unwrap();
    child.join().unwrap();
    let t = Instant::now();
    while q.qsize().unwrap() < 1999 {
        assert!(t.elapsed() < Duration::from_secs(10), "pipelined puts lost");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut got: Vec<u32> = (0..1999).map(|_| q.get().unwrap()).collect();
    assert_eq!(&got[..999], &(1..1000).collect::<Vec<_>>()[..]);
    got.sort();
    assert_eq!(got, (1..2000).collect::<Vec<_>>());
    // On the server's host the proxy puts on the queue's ring itself: a
    // refused pipelined put fails at once, and nothing else is lost.
    let small = manager.queue::<u32>(1).unwrap();
    small.put_pipelined(&1).unwrap();
    let err = small.put_pipelined(&2).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(small.get().unwrap(), 1);
    assert!(small.empty().unwrap());
    // Through the socket (as a client on another host has it): a refused
    // pipelined put is reported once, by the next call, and the
    // connection goes on.
    brood::manager::use_local_rings(false);
    let remote = Manager::start().unwrap();
    let small = remote.queue::<u32>(1).unwrap();
    small.put_pipelined(&1).unwrap();
    small.put_pipelined(&2).unwrap();
    small.put_pipelined(&3).unwrap();
    let err = small.get().unwrap_err();
    assert!(
        err.to_string()
            .contains("1 later pipelined puts were dropped"),
        "{err}"
    );
    assert_eq!(small.get().unwrap(), 1);
    assert!(small.empty().unwrap());
    brood::manager::use_local_rings(true);
}

/// A worker host that vanishes: connects over TCP, takes a lock, then makes
/// its TCP sockets disappear without a word (`TCP_REPAIR` mode: closing
/// such a socket sends neither FIN nor RST, as when a host loses power or
/// its cable) and exits. Returns how many sockets it silenced, or why it
/// could not.
fn vanishing_host((address, key): (String, Vec<u8>)) -> Result<u32, String> {
    // Play a remote host: stay on TCP (a client on the server's host would
    // move to shared-memory rings through the server's local alias).
    brood::manager::use_local_rings(false);
    let manager = Manager::connect(&address.parse().unwrap(), &key).map_err(|e| e.to_string())?;
    let lock = manager.named("lease").lock().map_err(|e| e.to_string())?;
    lock.acquire().map_err(|e| e.to_string())?;
    // Let the kernel acknowledge the server's last reply first (delayed
    // ACK): unacknowledged data would be retransmitted within 200 ms and
    // answered with a reset, noticed without any keep-alive.
    std::thread::sleep(Duration::from_millis(500));
    let mut silenced = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry.unwrap().file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&on`, a
        // live c_int; a descriptor that is not a TCP socket only fails.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_REPAIR,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            silenced += 1;
        } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
            return Err("TCP_REPAIR needs CAP_NET_ADMIN: run this test as root".into());
        }
    }
    Ok(silenced)
}

#[test]
fn a_worker_host_that_vanishes_is_noticed_by_keep_alive_and_its_lock_released() {
    let key = b"keep-alive key".to_vec();
    let master = Manager::serve(&"127.0.0.1:0".parse().unwrap(), &key).unwrap();
    let lock = master.named("lease").lock().unwrap();
    let mut host = Process::builder()
        .start_method(StartMethod::Spawn)
        .target_with(vanishing_host, (master.address().to_string(), key));
    host.start().unwrap();
    let silenced = host.join_timeout(Duration::from_secs(60)).unwrap();
    assert!(silenced.unwrap() >= 1, "the worker silenced no socket");
    let gone = Instant::now();
    // The worker's process is gone, but its host said nothing: the server
    // still sees the connection, so the lease still holds.
    assert!(lock.locked().unwrap());
    // Keep-alive probes it after KEEPALIVE_IDLE; the worker's kernel has no
    // such connection any more and answers with a reset (a host that
    // stays silent is given up on after idle + interval x count).
    let bound = brood::manager::KEEPALIVE_IDLE
        + brood::manager::KEEPALIVE_INTERVAL * brood::manager::KEEPALIVE_COUNT;
    assert!(
        lock.acquire_timeout(bound + Duration::from_secs(10))
            .unwrap()
    );
    let took = gone.elapsed();
    assert!(
        took >= brood::manager::KEEPALIVE_IDLE - Duration::from_secs(2),
        "released after {took:?}: too soon for keep-alive, so the worker's socket was not silent"
    );
    lock.release().unwrap();
}

/// Memory-file descriptors this process holds (rings and doorbells are).
fn memfds() -> usize {
    memfds_in("self")
}

/// Memory-file descriptors process `pid` ("self": this one) holds.
fn memfds_in(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("memfd:"))
        .count()
}

/// Connects over TCP (rings on or off), checks a round trip, and says how
/// many memory files the connection added.
fn tcp_client((address, key, rings): (String, Vec<u8>, bool)) -> Result<usize, String> {
    brood::manager::use_local_rings(rings);
    let before = memfds();
    let manager = Manager::connect(&address.parse().unwrap(), &key).map_err(|e| e.to_string())?;
    let d = manager
        .named("d")
        .dict::<u32, String>()
        .map_err(|e| e.to_string())?;
    d.insert(&7, &format!("rings {rings}"))
        .map_err(|e| e.to_string())?;
    let got = d.get(&7).map_err(|e| e.to_string())?;
    if got.as_deref() != Some(&*format!("rings {rings}")) {
        return Err(format!("read back {got:?}"));
    }
    Ok(memfds() - before)
}

#[test]
fn a_tcp_client_on_the_server_host_moves_to_shared_memory_rings() {
    let key = b"local alias".to_vec();
    let master = Manager::serve(&"127.0.0.1:0".parse().unwrap(), &key).unwrap();
    let address = master.address().to_string();
    let run = |rings: bool| {
        let mut p = Process::builder()
            .start_method(StartMethod::Spawn)
            .target_with(tcp_client, (address.clone(), key.clone(), rings));
        p.start().unwrap();
        p.join_timeout(Duration::from_secs(60)).unwrap().unwrap()
    };
    // Two rings and a doorbell: three memory files, only with rings on.
    assert!(run(true) >= 3, "a local TCP client did not move to rings");
    assert_eq!(run(false), 0, "rings were made although turned off");
    let d = master.named("d").dict::<u32, String>().unwrap();
    assert_eq!(d.get(&7).unwrap().as_deref(), Some("rings false"));
}

#[test]
fn large_values_stream_through_the_rings_both_ways() {
    let manager = Manager::start().unwrap();
    let q = manager.queue::<Vec<u8>>(0).unwrap();
    let d = manager.dict::<u32, Vec<u8>>().unwrap();
    // Larger than a ring (1 MiB): the message goes in pieces.
    let big: Vec<u8> = (0..1_200_000u32).map(|i| (i % 251) as u8).collect();
    for round in 0..2u8 {
        let mut value = big.clone();
        value[0] = round;
        q.put(&value).unwrap();
        d.insert(&u32::from(round), &value).unwrap();
        assert_eq!(q.get().unwrap(), value);
        assert_eq!(d.get(&u32::from(round)).unwrap(), Some(value));
    }
    // A child reads what the owner put, through its own rings.
    q.put(&big).unwrap();
    let mut child = Process::with_args(
        |(q, n): (ManagedQueue<Vec<u8>>, usize)| q.get().unwrap().len() == n,
        (q.clone(), big.len()),
    );
    child.start().unwrap();
    assert!(child.join_timeout(Duration::from_secs(60)).unwrap());
}

/// A consumer of a plain managed queue: on this host (maps the queue's
/// ring) or playing a remote host (rings off: every call goes through the
/// server). Takes `n` items and puts each on `out`, tagged.
fn consumer((address, key, local, n): (String, Vec<u8>, bool, u32)) -> Result<(), String> {
    brood::manager::use_local_rings(local);
    let manager = Manager::connect(&address.parse().unwrap(), &key).map_err(|e| e.to_string())?;
    let q = manager
        .named("q")
        .queue::<u32>(2)
        .map_err(|e| e.to_string())?;
    let out = manager
        .named("out")
        .queue::<(bool, u32)>(0)
        .map_err(|e| e.to_string())?;
    for _ in 0..n {
        let item = q.get().map_err(|e| e.to_string())?;
        out.put(&(local, item)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn a_plain_queue_is_one_ring_for_clients_on_this_host_and_elsewhere() {
    let key = b"one ring".to_vec();
    let mut master = Manager::serve(&"127.0.0.1:0".parse().unwrap(), &key).unwrap();
    let address = master.address().to_string();
    // Bounded (2): the owner's puts wait for both consumers' gets.
    let q = master.named("q").queue::<u32>(2).unwrap();
    let out = master.named("out").queue::<(bool, u32)>(0).unwrap();
    let before = memfds();
    q.put(&u32::MAX).unwrap();
    assert_eq!(
        memfds(),
        before + 1,
        "the owner did not map the queue's ring"
    );
    assert_eq!(q.get().unwrap(), u32::MAX);
    let start = |local: bool| {
        let mut p = Process::builder()
            .start_method(StartMethod::Spawn)
            .target_with(consumer, (address.clone(), key.clone(), local, 100));
        p.start().unwrap();
        p
    };
    let mut consumers = [start(true), start(false)];
    for i in 0..200 {
        q.put_timeout(&i, Duration::from_secs(30)).unwrap();
    }
    let mut got: Vec<(bool, u32)> = (0..200)
        .map(|_| out.get_timeout(Duration::from_secs(30)).unwrap())
        .collect();
    for c in &mut consumers {
        c.join_timeout(Duration::from_secs(30)).unwrap().unwrap();
    }
    // Each item reached exactly one consumer, and both took theirs.
    assert_eq!(got.iter().filter(|(local, _)| *local).count(), 100);
    got.sort_by_key(|&(_, i)| i);
    assert_eq!(
        got.iter().map(|&(_, i)| i).collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );
    // A client on this host killed while it waits in `get` on the ring:
    // the queue goes on, nothing is lost.
    let mut victim = start(true);
    // Its link's two rings and doorbell, and the queue's ring: mapped in
    // its first `get`, which then waits.
    let pid = victim.pid().unwrap().to_string();
    let t = Instant::now();
    while memfds_in(&pid) < 4 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the victim never got to its get"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    victim.kill().unwrap();
    assert_eq!(victim.join().unwrap_err().kind(), ErrorKind::Signaled);
    q.put(&7).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), 7);
    assert!(q.empty().unwrap());
    // The server shut down: a call on the ring fails at once, clearly.
    master.shutdown().unwrap();
    let t = Instant::now();
    let err = q.put(&8).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(err.to_string().contains("manager server"), "{err}");
}

/// Under a soft fd limit of 1024 (set here, inherited by the server it
/// starts): makes 1,500 plain queues (a ring and its fd each, in the
/// server) and uses every one: past this process's own limit a proxy
/// cannot map its queue's ring and is served through requests instead.
fn many_queues(n: u32) -> Result<(), String> {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(1024),
            maximum: hard,
        },
    )
    .map_err(|e| e.to_string())?;
    let manager = Manager::start().map_err(|e| e.to_string())?;
    let queues = (0..n)
        .map(|_| manager.queue::<u32>(0))
        .collect::<brood::Result<Vec<_>>>()
        .map_err(|e| e.to_string())?;
    for q in &queues {
        q.put(&n).map_err(|e| e.to_string())?;
        if q.get().map_err(|e| e.to_string())? != n {
            return Err("a queue lost its item".into());
        }
    }
    Ok(())
}

#[test]
fn a_server_holds_more_queues_than_the_usual_soft_fd_limit() {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    assert!(
        hard.is_none_or(|h| h >= 4096),
        "this machine's hard fd limit ({hard:?}) is too low for the test"
    );
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .target_with(many_queues, 1500);
    p.start().unwrap();
    p.join_timeout(Duration::from_secs(120)).unwrap().unwrap();
}
