//! The pool's result path (`pool/README.md`, "Wire protocol"): a worker
//! hands each result to the supervisor through a ring in shared memory,
//! and a result over 1 KiB through its socket, announced in the ring.
//! Results of every size, mixed, come back whole and in order; a worker
//! SIGKILLed at any moment while it hands over results of both kinds
//! fails exactly the task it held, under each start method. Every wait
//! has a bound: a hang fails the test.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use brood::os;
use brood::{ErrorKind, Pool, PoolBuilder, StartMethod};

fn builder(m: StartMethod) -> PoolBuilder {
    common::allow_fork();
    Pool::builder().start_method(m)
}

/// Result sizes around the ring's 1 KiB limit (the frame adds a header),
/// and far over it.
fn len_of(x: u64) -> usize {
    [0, 1, 900, 1000, 1010, 1024, 1100, 5000, 20_000][(x % 9) as usize]
}

fn result_of(x: u64) -> Vec<u8> {
    vec![x as u8; len_of(x)]
}

fn results_of_every_size_keep_their_order(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    let want: Vec<Vec<u8>> = (0..900).map(result_of).collect();
    let got = pool
        .chunksize(1)
        .map(
            |x: u64| {
                let len = [0, 1, 900, 1000, 1010, 1024, 1100, 5000, 20_000][(x % 9) as usize];
                vec![x as u8; len]
            },
            0..900u64,
        )
        .unwrap();
    assert!(got == want, "chunksize(1).map's results differ");
    // Chunks whose result frames are small, large, or both in turn.
    let got = pool
        .chunksize(3)
        .map(
            |x: u64| {
                let len = [0, 1, 900, 1000, 1010, 1024, 1100, 5000, 20_000][(x % 9) as usize];
                vec![x as u8; len]
            },
            0..900u64,
        )
        .unwrap();
    assert!(got == want, "chunksize(3).map's results differ");
    let mut got: Vec<(u64, Vec<u8>)> = pool
        .imap_unordered(
            |x: u64| {
                let len = [0, 1, 900, 1000, 1010, 1024, 1100, 5000, 20_000][(x % 9) as usize];
                (x, vec![x as u8; len])
            },
            0..900u64,
        )
        .map(|r| r.unwrap())
        .collect();
    got.sort();
    assert!(
        got.into_iter().map(|(_, v)| v).collect::<Vec<_>>() == want,
        "imap_unordered's results differ"
    );
    // Slow tasks: the supervisor sleeps between results and is woken.
    let rs: Vec<_> = (0..20u64)
        .map(|i| {
            pool.apply_async(
                |x: u64| {
                    std::thread::sleep(Duration::from_millis(5));
                    let len = [0, 1, 900, 1000, 1010, 1024, 1100, 5000, 20_000][(x % 9) as usize];
                    vec![x as u8; len]
                },
                i,
            )
            .unwrap()
        })
        .collect();
    for (i, r) in rs.into_iter().enumerate() {
        assert_eq!(
            r.get_timeout(Duration::from_secs(30)).unwrap(),
            result_of(i as u64)
        );
    }
    pool.close();
    pool.join().unwrap();
    common::assert_no_zombie_children();
}

fn a_worker_killed_while_handing_over_results(m: StartMethod) {
    let n: u64 = if m == StartMethod::Spawn {
        1_500
    } else {
        4_000
    };
    common::warm_up_pools(builder(m).processes(1).build().unwrap());
    let fds_before = common::open_fds();
    let pool = builder(m).processes(4).build().unwrap();
    let stop = AtomicBool::new(false);
    let kills = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut seed = 0x2545f4914f6cdd1du64 ^ u64::from(os::getpid().as_raw() as u32);
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                let pids = pool.worker_pids();
                if pids.is_empty() {
                    continue;
                }
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let victim = pids[(seed % pids.len() as u64) as usize];
                if os::kill(victim, libc::SIGKILL).is_ok() {
                    kills.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let rs: Vec<_> = (0..n)
            .map(|i| {
                pool.apply_async(
                    |x: u64| {
                        std::thread::sleep(Duration::from_micros(100));
                        let len =
                            [0, 1, 900, 1000, 1010, 1024, 1100, 5000, 20_000][(x % 9) as usize];
                        vec![x as u8; len]
                    },
                    i,
                )
                .unwrap()
            })
            .collect();
        // Stop killing once every task is done: kills of fresh, idle
        // workers would count as workers that cannot start (the pool
        // breaks after a run of those, by design).
        for r in &rs {
            r.wait_timeout(Duration::from_secs(120));
        }
        stop.store(true, Ordering::SeqCst);
        let (mut values, mut lost) = (0u64, 0usize);
        for (i, r) in rs.iter().enumerate() {
            match r.get_timeout(Duration::from_secs(120)) {
                Ok(v) => {
                    assert_eq!(v, result_of(i as u64), "task {i}");
                    values += 1;
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::WorkerLost, "{e}");
                    assert_eq!(e.signal(), Some(libc::SIGKILL), "{e}");
                    lost += 1;
                }
            }
        }
        let kills = kills.load(Ordering::SeqCst);
        assert_eq!(values + lost as u64, n);
        assert!(kills >= 5, "only {kills} kills in {:?}", started.elapsed());
        assert!(lost >= 1 && lost <= kills, "{lost} lost, {kills} kills");
        eprintln!(
            "{m}: {n} tasks, {kills} kills, {lost} WorkerLost, {:?}",
            started.elapsed()
        );
    });
    assert_eq!(pool.map(|x: u32| x, 0..100).unwrap().len(), 100);
    let pids = pool.worker_pids();
    pool.close();
    pool.join().unwrap();
    drop(pool);
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in pids {
        while os::ProcInfo::read(pid).is_ok_and(|i| i.state != os::ProcState::Zombie) {
            assert!(Instant::now() < deadline, "worker {pid} still alive");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    common::assert_no_zombie_children();
    assert_eq!(common::open_fds(), fds_before, "fds leaked");
}

/// An argument that cannot be encoded when it is 7,000.
#[derive(serde::Deserialize)]
struct Picky(u64);

impl serde::Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 7_000 {
            return Err(serde::ser::Error::custom("seven thousand"));
        }
        s.serialize_u64(self.0)
    }
}

fn a_map_whose_late_item_cannot_be_encoded_fails_and_the_pool_goes_on(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    // `map` hands units over as it encodes them: the first thousands are
    // with the workers before item 7,000 fails.
    let err = pool
        .chunksize(1)
        .map(|p: Picky| p.0, (0..10_000).map(Picky))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
    assert!(err.to_string().contains("seven thousand"), "{err}");
    let err = pool
        .map(|p: Picky| p.0, (0..10_000).map(Picky))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
    // The pool goes on, and whatever it still held of those maps is gone
    // (dropped, or run for no one) before the next result.
    assert_eq!(
        pool.chunksize(1).map(|x: u64| x * 3, 0..1000u64).unwrap(),
        (0..1000u64).map(|x| x * 3).collect::<Vec<_>>()
    );
    pool.close();
    pool.join().unwrap();
    common::assert_no_zombie_children();
}

fn large_chunks_are_decoded_as_they_arrive_with_the_same_outcome(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    // Chunks of 1,000 (decoded as they arrive): values in input order.
    let f = |x: u64| x * 7;
    assert_eq!(
        pool.chunksize(1000).map(f, 0..20_000u64).unwrap(),
        (0..20_000u64).map(|x| x * 7).collect::<Vec<_>>()
    );
    // The automatic chunksize (here 2,500).
    assert_eq!(
        pool.map(f, 0..20_000u64).unwrap(),
        (0..20_000u64).map(|x| x * 7).collect::<Vec<_>>()
    );
    // The first error in input order, whichever unit arrives first.
    let err = pool
        .chunksize(1000)
        .map(
            |x: u64| {
                if x == 15_500 {
                    panic!("late {x}");
                }
                if x == 5_500 {
                    std::thread::sleep(Duration::from_millis(200));
                    panic!("early {x}");
                }
                x
            },
            0..20_000u64,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
    assert!(err.to_string().contains("early 5500"), "{err}");
    // A chunk whose worker dies fails the map with WorkerLost, unless an
    // earlier chunk failed first.
    let err = pool
        .chunksize(1000)
        .map(
            |x: u64| {
                if x == 12_345 {
                    os::exit_now(9);
                }
                x
            },
            0..20_000u64,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerLost, "{err}");
    let err = pool
        .chunksize(1000)
        .map(
            |x: u64| {
                if x == 12_345 {
                    os::exit_now(9);
                }
                if x == 3_000 {
                    panic!("first {x}");
                }
                x
            },
            0..20_000u64,
        )
        .unwrap_err();
    assert!(err.to_string().contains("first 3000"), "{err}");
    assert_eq!(pool.map(|x: u8| x, 0..10).unwrap().len(), 10);
    pool.close();
    pool.join().unwrap();
    common::assert_no_zombie_children();
}

/// A value whose encoding fails after part of it is written (its first
/// field encodes, its second does not) when `x` is 3 mod 10.
struct HalfWritten(u64);

impl serde::Serialize for HalfWritten {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeStruct};
        let mut st = s.serialize_struct("HalfWritten", 2)?;
        st.serialize_field("x", &self.0)?;
        if self.0 % 10 == 3 {
            return Err(S::Error::custom(format!("cannot encode {}", self.0)));
        }
        st.serialize_field("long", &"y".repeat(self.0 as usize % 50))?;
        st.end()
    }
}

impl<'de> serde::Deserialize<'de> for HalfWritten {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HalfWritten, D::Error> {
        #[derive(serde::Deserialize)]
        struct Raw {
            x: u64,
            long: String,
        }
        let raw = Raw::deserialize(d)?;
        assert_eq!(raw.long.len(), raw.x as usize % 50);
        Ok(HalfWritten(raw.x))
    }
}

/// An argument that encodes, but does not decode, when it is 5 mod 10.
struct Undecodable(u64);

impl serde::Serialize for Undecodable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 10 == 5 {
            s.serialize_str("not a number")
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Undecodable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Undecodable, D::Error> {
        u64::deserialize(d).map(Undecodable)
    }
}

/// Workers encode each value straight into the unit's result frame: an
/// item whose value fails halfway through its encoding, whose arguments do
/// not decode, or that panics, gets its own error (with the message, and
/// the panic's location), and the items around it in the same chunk
/// their values, whole.
fn failures_inside_a_chunk_are_each_items_own(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    for chunksize in [1, 7, 100] {
        let got: Vec<_> = pool
            .chunksize(chunksize)
            .imap(
                |a: Undecodable| {
                    if a.0 % 10 == 8 {
                        panic!("eight-ish {}", a.0);
                    }
                    HalfWritten(a.0)
                },
                (0..300u64).map(Undecodable),
            )
            .collect();
        assert_eq!(got.len(), 300);
        for (x, r) in got.into_iter().enumerate() {
            match x % 10 {
                3 => {
                    let e = r.err().expect("an encode failure");
                    assert_eq!(e.kind(), ErrorKind::Codec, "{e}");
                    assert!(e.to_string().contains(&format!("cannot encode {x}")), "{e}");
                }
                5 => {
                    let e = r.err().expect("bad arguments");
                    assert_eq!(e.kind(), ErrorKind::Codec, "{e}");
                    assert!(e.to_string().contains("could not decode"), "{e}");
                }
                8 => {
                    let e = r.err().expect("a panic");
                    assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
                    assert!(e.to_string().contains(&format!("eight-ish {x}")), "{e}");
                    assert!(e.to_string().contains("pool_ring.rs"), "{e}");
                }
                _ => assert_eq!(r.expect("a value").0, x as u64),
            }
        }
    }
    // `map` fails with the first of them in input order.
    let err = pool
        .map(|x: u64| HalfWritten(x), 0..1000u64)
        .map(|v| v.len())
        .unwrap_err();
    assert!(err.to_string().contains("cannot encode 3"), "{err}");
    pool.close();
    pool.join().unwrap();
    common::assert_no_zombie_children();
}

/// An iterator whose `size_hint` claims an exact length it does not have.
struct Liar {
    next: u64,
    end: u64,
    claims: usize,
}

impl Iterator for Liar {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.claims, Some(self.claims))
    }
}

/// 512 items, then 300 ms before it says it has ended; its `size_hint`
/// is exact.
struct SlowEnd {
    left: u64,
}

impl Iterator for SlowEnd {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if self.left == 0 {
            std::thread::sleep(Duration::from_millis(300));
            return None;
        }
        self.left -= 1;
        Some(self.left)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

/// `map` reads an input of known length as it encodes it (no list of the
/// items); one that yields more or fewer items than its `size_hint`
/// promised still gets one value per item, in order, from every verb.
fn an_input_whose_length_lies_still_maps_every_item(m: StartMethod) {
    let pool = builder(m).processes(2).build().unwrap();
    for (end, claims) in [(5_000, 10), (10, 5_000), (0, 3), (3_000, 0), (2_000, 2_000)] {
        let liar = || Liar {
            next: 0,
            end,
            claims,
        };
        let want: Vec<u64> = (0..end).map(|x| x + 1).collect();
        assert_eq!(pool.map(|x: u64| x + 1, liar()).unwrap(), want);
        assert_eq!(pool.chunksize(7).map(|x: u64| x + 1, liar()).unwrap(), want);
        assert_eq!(
            pool.map_async(|x: u64| x + 1, liar())
                .unwrap()
                .get()
                .unwrap(),
            want
        );
        let sums = pool
            .starmap(|a: u64, b: u64| a + b, liar().map(|x| (x, 1)))
            .unwrap();
        assert_eq!(sums, want);
    }
    // The input's end is seen before its last unit is queued, so the job
    // completes, and its callbacks run, in the supervisor's thread even
    // when the workers are done with every other unit by then (here the
    // input takes 300 ms to say it has ended, after exactly one batch of
    // 512 units was handed over).
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let callbacks = brood::pool::Callbacks::new().on_success(move |v: &Vec<u64>| {
        let name = std::thread::current().name().map(str::to_owned);
        s.lock().unwrap().push((v.len(), name));
    });
    let slow_end = SlowEnd { left: 512 };
    let r = pool
        .chunksize(1)
        .map_async_with(|x: u64| x + 1, slow_end, callbacks)
        .unwrap();
    assert_eq!(r.get().unwrap().len(), 512);
    assert_eq!(
        *seen.lock().unwrap(),
        [(512, Some("brood-pool".to_string()))]
    );
    pool.close();
    pool.join().unwrap();
    common::assert_no_zombie_children();
}

suite!(
    an_input_whose_length_lies_still_maps_every_item,
    failures_inside_a_chunk_are_each_items_own,
    large_chunks_are_decoded_as_they_arrive_with_the_same_outcome,
    a_map_whose_late_item_cannot_be_encoded_fails_and_the_pool_goes_on,
    results_of_every_size_keep_their_order,
    a_worker_killed_while_handing_over_results,
);
