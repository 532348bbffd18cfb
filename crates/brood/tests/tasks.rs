//! Registered tasks: called by name under every start method; unknown names
//! and wrong argument types give distinct, clear errors.

mod common;

use brood::{ErrorKind, Process, StartMethod};

#[brood::task]
fn add(a: u32, b: u32) -> u32 {
    a + b
}

#[brood::task]
fn greet(name: String) -> String {
    format!("hello, {name}")
}

#[brood::task]
fn nothing() {}

const ADD: &str = concat!(module_path!(), "::add");

#[test]
fn tasks_are_registered_under_module_path_and_name() {
    let names: Vec<&str> = brood::task::registered().collect();
    assert!(names.contains(&"tasks::add"), "{names:?}");
    assert!(names.contains(&"tasks::greet"));
    assert!(names.contains(&"tasks::nothing"));
    assert_eq!(ADD, "tasks::add");
}

#[test]
fn call_by_name_under_every_start_method() {
    common::allow_fork();
    for m in StartMethod::ALL {
        let mut p = Process::builder()
            .start_method(m)
            .task::<u32, _>(ADD, (2u32, 40u32));
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 42, "{m}");
        let mut p = Process::builder()
            .start_method(m)
            .task::<String, _>("tasks::greet", ("brood".to_string(),));
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), "hello, brood");
        let mut p = Process::builder()
            .start_method(m)
            .task::<(), _>("tasks::nothing", ());
        p.start().unwrap();
        p.join().unwrap();
    }
}

#[test]
fn an_unknown_name_is_refused_before_any_child_starts() {
    let mut p = Process::<u32>::task("tasks::no_such_task", (1u32,));
    let err = p.start().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownTask);
    assert!(err.to_string().contains("tasks::no_such_task"), "{err}");
    assert!(p.pid().is_none());
}

#[test]
fn a_wrong_argument_type_is_a_codec_error_from_the_child() {
    common::allow_fork();
    for m in StartMethod::ALL {
        let mut p = Process::builder()
            .start_method(m)
            .task::<u32, _>(ADD, ("two", "three"));
        p.start().unwrap();
        let err = p.join().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec, "{m}: {err}");
        assert!(
            err.to_string().contains("could not decode its arguments"),
            "{err}"
        );
        assert_eq!(p.exitcode(), Some(1));
    }
}

#[test]
fn a_wrong_return_type_is_a_codec_error_in_the_parent() {
    let mut p = Process::<Vec<String>>::task(ADD, (1u32, 2u32));
    p.start().unwrap();
    let err = p.join().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    assert_ne!(err.kind(), ErrorKind::UnknownTask);
}

#[test]
fn a_panic_carries_a_backtrace_when_rust_backtrace_is_set() {
    common::allow_fork();
    for m in StartMethod::ALL {
        // A forked child never reads the environment (another thread of
        // the parent could hold its lock): the parent reads RUST_BACKTRACE
        // at the fork. Spawn and forkserver children read their own.
        let forked = m == StartMethod::Fork;
        if forked {
            // SAFETY: this test's only other thread (the harness's) does
            // not touch the environment.
            unsafe { std::env::set_var("RUST_BACKTRACE", "1") };
        }
        let mut p = Process::builder().start_method(m).target(|| -> () {
            // The child's own environment: the parent's is left alone.
            // SAFETY: the child runs this function on its only thread.
            unsafe { std::env::set_var("RUST_BACKTRACE", "1") };
            panic!("with a trace")
        });
        p.start().unwrap();
        if forked {
            // SAFETY: as above.
            unsafe { std::env::remove_var("RUST_BACKTRACE") };
        }
        let err = p.join().unwrap_err();
        let report = err.panic().unwrap();
        assert_eq!(report.message, "with a trace");
        let bt = report.backtrace.as_deref().unwrap_or_default();
        assert!(
            bt.contains("tasks.rs") || bt.contains("a_panic_carries"),
            "{m}: {bt}"
        );
        // Without it, no backtrace.
        let mut p = Process::builder().start_method(m).target(|| -> () {
            // SAFETY: as above.
            unsafe { std::env::remove_var("RUST_BACKTRACE") };
            panic!("bare")
        });
        p.start().unwrap();
        assert!(p.join().unwrap_err().panic().unwrap().backtrace.is_none());
    }
}
