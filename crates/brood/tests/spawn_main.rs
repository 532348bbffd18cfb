//! A spawned child runs none of `main`: this binary has its own `main`
//! (no test harness) that records each time it runs, then spawns children.

use brood::{Process, StartMethod};

fn main() {
    // Speak just enough of libtest's command line for cargo-nextest.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("spawned_children_do_not_run_main: test");
        }
        return;
    }
    // The side effect at the top of main: one line per run of main, in a
    // file whose path children inherit through the environment, so a child
    // that ran main would add a line to the same file.
    let marker = std::env::var_os("BROOD_SPAWN_MAIN_MARKER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("brood-spawn-main-{}", std::process::id()))
        });
    let mut line = std::fs::read_to_string(&marker).unwrap_or_default();
    line.push_str("main ran\n");
    std::fs::write(&marker, &line).unwrap();
    // SAFETY: no other thread exists yet in this harness-less binary.
    unsafe { std::env::set_var("BROOD_SPAWN_MAIN_MARKER", &marker) };

    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let mut p = Process::builder().start_method(m).target_with(
            |path: std::path::PathBuf| {
                std::fs::read_to_string(path)
                    .unwrap_or_default()
                    .lines()
                    .count()
            },
            marker.clone(),
        );
        p.start().unwrap();
        // The child saw exactly one run of main: the parent's.
        assert_eq!(p.join().unwrap(), 1, "{m}: main ran in the child");
    }
    // After the children are gone, still one line: main ran once.
    let text = std::fs::read_to_string(&marker).unwrap();
    std::fs::remove_file(&marker).unwrap();
    assert_eq!(text, "main ran\n");
    println!("test spawned_children_do_not_run_main ... ok");
}
