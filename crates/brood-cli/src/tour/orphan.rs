//! Orphans: a process whose parent exits first is adopted — by init, or by
//! the nearest ancestor that declared itself a child subreaper.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use brood::os::{self, Pid, ProcInfo};

use super::kit::{self, BOUND, Kid, SubreaperOff, explain, line, name_of, show, show_adopted};
use super::reference;

/// The tour's Python for §4.1, which shows no code.
const PYTHON: &str = "pid = os.fork()\n\
if pid == 0:\n\
\x20   if os.fork() == 0:\n\
\x20       sleep(1); print(\"my parent is now\", os.getppid())   # init, e.g. 1\n\
\x20   os._exit(0)          # the middle process leaves first\n\
os.waitpid(pid, 0)";

/// What this topic runs, in short.
const RUST: &str = "let middle = kit::fork_raw(|| {\n\
\x20   let me = brood::os::getpid();\n\
\x20   kit::fork_raw(|| {                            // the grandchild\n\
\x20       while brood::os::getppid() == me { sleep(1 ms) }\n\
\x20       println!(\"my parent is now {}\", brood::os::getppid());   // init, or a subreaper\n\
\x20       0\n\
\x20   });\n\
\x20   0                                             // the middle process leaves first\n\
})?;\n\
brood::os::waitpid(Some(middle), WaitFlags::empty())?;\n\
brood::os::set_child_subreaper(true)?;            // then: the tour adopts its orphans";

/// A grandchild orphaned on purpose, still alive and waiting for `go`.
struct Orphan {
    /// The grandchild, watched through its pidfd.
    grandchild: Kid,
    /// The middle process, its first parent (exited and reaped by now).
    middle: Pid,
    /// Its parent after the middle process exited, as its getppid() said.
    adopter: Pid,
    /// Closing this lets the grandchild exit.
    go: OwnedFd,
}

/// Makes an orphan twice: first adopted by init (or a subreaper above the
/// tour), then with the tour as subreaper, which adopts and reaps it.
pub(crate) fn run() -> Result<()> {
    explain(
        "An orphan is a process whose parent exited before it. It is not left without a \
         parent: the kernel re-parents it at once to the nearest ancestor that declared \
         itself a \"child subreaper\", or, if there is none, to init, pid 1 of its pid \
         namespace. The adopter receives its exit status and reaps it, so an orphan never \
         stays a zombie for long. Here the tour forks a middle process, which forks a \
         grandchild and exits at once; the grandchild watches its getppid() change.",
    );
    kit::reference_says("§4.1, which shows no code", reference::ORPHAN, PYTHON);
    kit::rust(RUST);
    let tour = os::getpid();
    let orphan = make_orphan()?;
    let g = orphan.grandchild.pid();
    line(
        "parent",
        format!(
            "the middle process {} forked the grandchild {g}, exited at once, and was reaped",
            orphan.middle
        ),
    );
    let info = ProcInfo::read(g)?;
    show_adopted(&info);
    let name = name_of(orphan.adopter);
    line(
        "parent",
        format!(
            "the grandchild reported: my parent was {}; after it exited, getppid() = {} ({name})",
            orphan.middle, orphan.adopter
        ),
    );
    ensure!(
        orphan.adopter != orphan.middle && orphan.adopter != tour,
        "the grandchild should have been adopted by init or a subreaper above the tour, \
         but its parent is {}",
        orphan.adopter
    );
    ensure!(
        info.ppid == orphan.adopter.as_raw(),
        "/proc says its parent is {}, getppid() said {}",
        info.ppid,
        orphan.adopter
    );
    if orphan.adopter.as_raw() == 1 {
        line(
            "parent",
            format!(
                "adopted by pid 1 ({name}), init: it takes in every orphan no subreaper claims"
            ),
        );
    } else {
        line(
            "parent",
            format!(
                "adopted by pid {} ({name}), not pid 1: an ancestor of the tour that set \
                 PR_SET_CHILD_SUBREAPER (systemd --user, container runtimes and tini do), \
                 or the init of this pid namespace",
                orphan.adopter
            ),
        );
    }
    let orphan_adopter = orphan.adopter;
    let Orphan { grandchild, go, .. } = orphan;
    drop(go);
    grandchild.wait_exit()?;
    kit::report_adopter_reap("the grandchild", g, orphan_adopter);
    println!();

    explain(
        "Now the tour marks itself a child subreaper with \
         brood::os::set_child_subreaper(true) (prctl(PR_SET_CHILD_SUBREAPER); Python has no \
         os function for it: ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)). The same orphan is \
         then adopted by the tour itself, which must reap it -- this is how service \
         managers keep track of daemons that double-fork.",
    );
    let _off = SubreaperOff;
    os::set_child_subreaper(true).context("prctl(PR_SET_CHILD_SUBREAPER) failed")?;
    let orphan = make_orphan()?;
    let g = orphan.grandchild.pid();
    let info = ProcInfo::read(g)?;
    show(&[&info]);
    line(
        "parent",
        format!(
            "the grandchild reported: my parent was {}; after it exited, getppid() = {}",
            orphan.middle, orphan.adopter
        ),
    );
    ensure!(
        orphan.adopter == tour && info.ppid == tour.as_raw(),
        "the subreaper tour ({tour}) should have adopted the grandchild, its parent is {}",
        orphan.adopter
    );
    let Orphan {
        mut grandchild, go, ..
    } = orphan;
    grandchild.adopted();
    drop(go);
    let status = grandchild.join()?;
    line(
        "parent",
        format!(
            "adopted: the grandchild {g} became the tour's child; it {status}, and the tour \
             reaped it with waitpid({g})"
        ),
    );
    ensure!(status.success(), "the grandchild should exit 0: {status}");
    os::set_child_subreaper(false)?;
    Ok(())
}

/// Forks a middle process that forks a grandchild and exits at once; reaps
/// the middle process and returns the grandchild, alive, with what it saw.
fn make_orphan() -> Result<Orphan> {
    let (report_r, report_w) = kit::pipe()?;
    let (go_r, go_w) = kit::pipe()?;
    let mut middle = Kid::fork(|| {
        // The grandchild must see end of file once the tour closes `go_w`.
        kit::close_in_child(&go_w);
        let middle = os::getpid();
        let forked = kit::fork_raw(|| {
            // Wait for the middle process to be gone, then report.
            let deadline = Instant::now() + BOUND;
            while os::getppid() == middle && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let sent = kit::send(
                &report_w,
                &[
                    os::getpid().as_raw(),
                    middle.as_raw(),
                    os::getppid().as_raw(),
                ],
            );
            kit::wait_for_go(&go_r);
            i32::from(!sent)
        });
        // The middle process leaves at once: that is what orphans the grandchild.
        i32::from(forked.is_err())
    })?;
    drop(report_w);
    drop(go_r);
    let middle_pid = middle.pid();
    let status = middle.join()?;
    ensure!(
        status.success(),
        "the middle process could not fork: {status}"
    );
    let report = kit::recv(&report_r, 3)?;
    let pid = |raw: i32| Pid::from_raw(raw).context("the grandchild reported a bad pid");
    let grandchild = Kid::watch(pid(report[0])?)?;
    ensure!(
        pid(report[1])? == middle_pid,
        "the grandchild's first parent should be the middle process"
    );
    Ok(Orphan {
        grandchild,
        middle: middle_pid,
        adopter: pid(report[2])?,
        go: go_w,
    })
}
