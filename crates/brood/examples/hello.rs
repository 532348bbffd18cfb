//! README's hello: a value back from a child under each way of starting one.
//! Run: `cargo run -p brood --example hello`.

use brood::{Process, StartMethod};

fn main() -> Result<(), brood::Error> {
    // A function that captures nothing runs under every start method;
    // its arguments and its value cross through the codec (MessagePack).
    let mut p = Process::with_args(|n: u64| n * 2, 21);
    p.start()?;
    assert_eq!(p.join()?, 42);
    assert_eq!(p.exitcode(), Some(0));

    // A capturing closure runs in a forked child.
    let greeting = String::from("hello");
    let mut p = Process::fork(move || greeting.len());
    p.start()?;
    assert_eq!(p.join()?, 5);

    // join says why there is no value.
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .target(|| -> u8 { panic!("boom") });
    p.start()?;
    let err = p.join().unwrap_err();
    assert_eq!(err.panic().unwrap().message, "boom"); // with file:line:col
    println!("hello: 42, 5, and a panic reported as {err}");
    Ok(())
}
