//! Smoke: one child under each start method.
fn main() {
    for m in brood::StartMethod::ALL {
        let t = std::time::Instant::now();
        let mut p = brood::Process::builder()
            .start_method(m)
            .target_with(|x: u32| x * 2, 21);
        p.start().unwrap();
        let v = p.join();
        println!("{m}: {v:?} exit={:?} in {:?}", p.exitcode(), t.elapsed());
    }
}
