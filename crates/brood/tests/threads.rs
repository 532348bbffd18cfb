//! Forking from a program with threads. This binary never calls
//! `allow_fork_with_threads`, so brood's own guard is what is tested.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use brood::{ErrorKind, Process, StartMethod};

#[test]
fn a_capturing_fork_is_refused_with_the_alternatives_named() {
    // libtest runs this test on a second thread, so the program has threads.
    let text = String::from("captured");
    let mut p = Process::fork(move || text.len());
    let err = p.start().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ForkWithThreads);
    let msg = err.to_string();
    assert!(
        msg.contains("spawn")
            && msg.contains("forkserver")
            && msg.contains("allow_fork_with_threads"),
        "{msg}"
    );
    assert!(p.pid().is_none());
}

#[test]
fn capture_free_functions_under_fork_go_through_the_forkserver() {
    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .target(|| 7);
    p.start().unwrap();
    assert_eq!(p.start_method(), Some(StartMethod::ForkServer));
    assert_eq!(p.join().unwrap(), 7);
}

#[test]
fn nothing_deadlocks_while_another_thread_holds_stdout_and_allocates() {
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Hold stdout's lock the whole time and keep the allocator busy.
            let mut out = std::io::stdout().lock();
            let mut keep = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                keep.push(vec![0u8; 4096]);
                if keep.len() > 256 {
                    keep.clear();
                }
                let _ = out.flush();
            }
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    for m in StartMethod::ALL {
        for _ in 0..20 {
            let mut p = Process::builder().start_method(m).target(|| {
                // The child prints and allocates: a child forked from this
                // process would find stdout's lock held forever.
                println!("child {} says hello", std::process::id());
                vec![1u8; 1 << 16].len()
            });
            p.start().unwrap();
            assert_eq!(
                p.join_timeout(Duration::from_secs(20)).unwrap(),
                1 << 16,
                "{m}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
}

/// Run in a spawned child, whose only thread is its main one: each round
/// joins a fresh thread and at once forks a capturing closure. The kernel
/// may still list a thread whose joiner it already woke; brood must not
/// take that thread for a live one and refuse the fork.
fn join_then_fork(rounds: u32) -> Result<u32, String> {
    for i in 0..rounds {
        std::thread::spawn(|| ()).join().unwrap();
        let mut p = Process::fork(move || i);
        p.start().map_err(|e| format!("round {i}: {e}"))?;
        if p.join().map_err(|e| e.to_string())? != i {
            return Err(format!("round {i}: another value came back"));
        }
    }
    Ok(rounds)
}

#[test]
fn a_thread_joined_just_before_a_capturing_fork_does_not_block_it() {
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .target_with(join_then_fork, 500);
    p.start().unwrap();
    assert_eq!(p.join_timeout(Duration::from_secs(120)).unwrap(), Ok(500));
}
