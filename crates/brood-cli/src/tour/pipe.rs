//! Pipes: Python's `multiprocessing.Pipe`, two connected ends that carry
//! messages between processes, and what travels with them (end of file,
//! readiness, file descriptors, other processes through a listener).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use brood::connection::{self, Address, Client, Connection, Listener, Waitable, pipe};
use brood::{Context, ErrorKind, Process, StartMethod, os};

use super::kit::{self, BOUND, Guarded, explain, line, line_wrapped, python};
use super::reference;

/// The reference's example, as this topic runs it.
const RUST: &str = "let (fd1, fd2) = brood::connection::pipe(true)?;   // Pipe(), duplex\n\
fn fun1(mut fd1: Connection) {\n\
\x20   let data: String = fd1.recv()?;                  // 从管道获取消息\n\
\x20   println!(\"管道2传给管道1的数据 {data}\");\n\
\x20   fd1.send(&\"跟你说句悄悄话\")?;\n\
}\n\
fn fun2(mut fd2: Connection) {\n\
\x20   fd2.send(&\"肥水不流外人天\")?;\n\
\x20   let data: String = fd2.recv()?;\n\
\x20   println!(\"管道1传给管道2的数据 {data}\");\n\
}\n\
let mut p1 = Process::builder().target_with(fun1, fd1);   // each end goes to one child\n\
let mut p2 = Process::builder().target_with(fun2, fd2);\n\
p1.start()?; p2.start()?; p1.join()?; p2.join()?;";

/// What a child hands back: its value, or the text of the error that
/// stopped it.
type Answer<T> = std::result::Result<T, String>;

/// An error's text, for an [`Answer`].
fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The reference's `fun1`: receives, prints, answers. Returns what it
/// received.
fn fun1(mut fd1: Connection) -> Answer<String> {
    let data: String = fd1.recv_timeout(BOUND).map_err(text)?;
    line("fun1", format!("管道2传给管道1的数据 {data}"));
    let inpu = format!("跟你说句悄悄话 (from pid {})", os::getpid());
    fd1.send(&inpu).map_err(text)?;
    Ok(data)
}

/// The reference's `fun2`: sends first, then prints the answer. Returns
/// what it received.
fn fun2(mut fd2: Connection) -> Answer<String> {
    fd2.send(&format!("肥水不流外人天 (from pid {})", os::getpid()))
        .map_err(text)?;
    let data: String = fd2.recv_timeout(BOUND).map_err(text)?;
    line("fun2", format!("管道1传给管道2的数据 {data}"));
    Ok(data)
}

/// Sends three values and one raw message down a one-way pipe, then
/// returns (its end closes as it exits).
fn producer(mut w: Connection) -> Answer<usize> {
    w.send(&("a tuple", 1, 2.5)).map_err(text)?;
    w.send(&vec![1, 2, 3]).map_err(text)?;
    w.send(&Some("an Option")).map_err(text)?;
    w.send_bytes(b"raw bytes, no codec").map_err(text)?;
    line(
        "producer",
        "sent 3 values and 1 raw message; returning, so my end closes",
    );
    Ok(4)
}

/// How [`reader`] stopped.
const BY_SENTINEL: &str = "the sentinel None";
/// See [`BY_SENTINEL`].
const BY_EOF: &str = "end of file (Closed, Python's EOFError)";
/// See [`BY_SENTINEL`].
const BY_TIMEOUT: &str = "nothing: no end of file came";

/// How long [`reader`] waits for each message before giving up.
const READER_PATIENCE: Duration = Duration::from_millis(300);

/// Receives `Some(text)` messages until a `None`, end of file, or
/// [`READER_PATIENCE`] without anything; returns the texts and why it
/// stopped.
fn reader(mut c: Connection) -> (Vec<String>, String) {
    let mut got = Vec::new();
    loop {
        match c.recv_timeout::<Option<String>>(READER_PATIENCE) {
            Ok(Some(m)) => got.push(m),
            Ok(None) => return (got, BY_SENTINEL.into()),
            Err(e) if e.kind() == ErrorKind::Closed => return (got, BY_EOF.into()),
            Err(e) if e.is_timeout() => return (got, BY_TIMEOUT.into()),
            Err(e) => return (got, format!("an error: {e}")),
        }
    }
}

/// Sleeps `delay` ms, then sends `(delay, its pid)`.
fn late((mut c, delay): (Connection, u64)) -> Answer<()> {
    std::thread::sleep(Duration::from_millis(delay));
    c.send(&(delay, os::getpid().as_raw())).map_err(text)
}

/// Receives a file descriptor, writes a line into the file, says done.
/// Returns the line.
fn write_into_received(mut c: Connection) -> Answer<String> {
    if !c.poll(Some(BOUND)).map_err(text)? {
        return Err(format!("no file descriptor came within {BOUND:?}"));
    }
    let fd = c.recv_fd().map_err(text)?;
    let raw = fd.as_raw_fd();
    let target = std::fs::read_link(format!("/proc/self/fd/{raw}"))
        .map_or_else(text, |p| p.display().to_string());
    line(
        "fd-writer",
        format!("recv_fd() -> my fd {raw}, which is {target}"),
    );
    let mut file = File::from(fd);
    let written = format!("written by pid {} through the fd it received", os::getpid());
    file.write_all(written.as_bytes()).map_err(text)?;
    c.send(&"done").map_err(text)?;
    Ok(written)
}

/// Connects to `address` with `key`, sends a greeting, returns it.
fn client((address, key): (String, Vec<u8>)) -> Answer<String> {
    let parsed: Address = address.parse().map_err(text)?;
    let mut c = Client::connect_timeout(&parsed, Some(&key), BOUND).map_err(text)?;
    let greeting = format!("hello over {address}, from pid {}", os::getpid());
    c.send(&greeting).map_err(text)?;
    Ok(greeting)
}

/// Milliseconds since `t0`, with a decimal.
fn ms_since(t0: Instant) -> String {
    format!("{:.1}", t0.elapsed().as_secs_f64() * 1000.0)
}

/// The reference's Pipe example, a one-way pipe, end of file, `wait`, fd
/// passing, and a listener with an auth key.
pub(crate) fn run() -> Result<()> {
    duplex()?;
    one_way()?;
    end_of_file()?;
    waiting()?;
    passing_fds()?;
    listener()?;
    ensure!(
        brood::active_children().is_empty(),
        "every child should be joined"
    );
    Ok(())
}

/// The reference's example: two processes talk over one duplex pipe.
fn duplex() -> Result<()> {
    explain(
        "A process cannot read another's memory, so they talk through the kernel. Pipe() \
         makes two connected ends; whatever one end sends, the other receives, in order. \
         Each end goes to one process: brood passes them as arguments \
         (Process::with_args(f, conn), or target_with), and the end's file descriptor \
         crosses to the child under every start method. send() encodes a value, recv() \
         decodes it (Python pickles; brood uses its codec, MessagePack, so the receiver \
         names the type it expects).",
    );
    kit::reference("§7.1", reference::PIPE);
    kit::rust(RUST);
    let (fd1, fd2) = pipe(true)?;
    let mut p1 = Guarded(Process::builder().name("fun1").target_with(fun1, fd1));
    let mut p2 = Guarded(Process::builder().name("fun2").target_with(fun2, fd2));
    kit::flush();
    p1.start()?;
    p2.start()?;
    let got1 = p1.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?;
    let got2 = p2.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?;
    let pid1 = p1.pid().context("fun1 has a pid")?;
    let pid2 = p2.pid().context("fun2 has a pid")?;
    ensure!(
        got1.ends_with(&format!("(from pid {pid2})")),
        "fun1 should have received fun2's message (pid {pid2}), got {got1:?}"
    );
    ensure!(
        got2.ends_with(&format!("(from pid {pid1})")),
        "fun2 should have received fun1's message (pid {pid1}), got {got2:?}"
    );
    line(
        "parent",
        format!(
            "fun1 ({pid1}) received the message fun2 ({pid2}) wrote, and fun2 the answer: \
             each names the other's pid (the tour adds the sender's pid to the reference's \
             messages, to show who wrote them)"
        ),
    );
    println!();
    kit::correction(
        "its notes say 「multiprocessing中管道通信只能用于父子关系进程中」, that a pipe only \
         links a parent and its children. A Pipe() end does reach only the processes that \
         inherit it or are handed it, but it can be handed to any process over a Unix \
         socket (send_fd below), and multiprocessing.connection's Listener and Client link \
         processes that are not related at all (at the end of this topic).",
    );
    Ok(())
}

/// `Pipe(False)`: one end receives, the other sends; `poll`, raw bytes and
/// end of file.
fn one_way() -> Result<()> {
    explain(
        "Pipe(False) is one-way: the first end only receives, the second only sends. \
         poll(timeout) says whether a message is there, waiting at most that long, so a \
         receive need not block. send_bytes/recv_bytes move raw bytes, no codec, framed \
         as Python frames them (Python can read them). When every copy of the sending end \
         is closed and all was read, the receive fails: Python raises EOFError, brood \
         returns an ErrorKind::Closed error.",
    );
    python(
        "r, w = Pipe(False)\n\
         p = Process(target=producer, args=(w,)); p.start()\n\
         w.close()                  # the parent's copy\n\
         while r.poll(10):\n\
         \x20   try: print(r.recv())\n\
         \x20   except EOFError: break",
    );
    let (mut r, mut w) = pipe(false)?;
    line(
        "parent",
        format!(
            "r: readable {}, writable {}; w: readable {}, writable {}",
            r.readable(),
            r.writable(),
            w.readable(),
            w.writable()
        ),
    );
    let wrong = r.send(&1).err().context("r.send should fail")?;
    line("parent", format!("r.send(&1) -> Err: {wrong}"));
    let wrong = w.recv_bytes().err().context("w.recv_bytes should fail")?;
    line("parent", format!("w.recv_bytes() -> Err: {wrong}"));
    let t0 = Instant::now();
    let early = r.poll(Some(Duration::from_millis(50)))?;
    line(
        "parent",
        format!(
            "r.poll(50 ms) -> {early} after {} ms: nothing sent yet",
            ms_since(t0)
        ),
    );
    ensure!(!early, "nothing should be there before the producer runs");
    let mut p = Guarded(Process::builder().name("producer").target_with(producer, w));
    line(
        "parent",
        "w moved into the producer's arguments: the tour's copy is closed, no w.close() to forget",
    );
    kit::flush();
    p.start()?;
    ensure!(
        r.poll(Some(BOUND))?,
        "nothing came from the producer within {BOUND:?}"
    );
    let tuple: (String, i32, f64) = r.recv_timeout(BOUND)?;
    let list: Vec<i32> = r.recv_timeout(BOUND)?;
    let option: Option<String> = r.recv_timeout(BOUND)?;
    let raw = r.recv_bytes_timeout(BOUND)?;
    line("parent", format!("recv() -> {tuple:?}"));
    line("parent", format!("recv() -> {list:?}"));
    line("parent", format!("recv() -> {option:?}"));
    line(
        "parent",
        format!("recv_bytes() -> {:?}", String::from_utf8_lossy(&raw)),
    );
    ensure!(
        tuple == ("a tuple".to_string(), 1, 2.5)
            && list == [1, 2, 3]
            && option.as_deref() == Some("an Option")
            && raw == b"raw bytes, no codec",
        "the messages arrived changed"
    );
    let sent = p.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?;
    ensure!(sent == 4, "the producer says it sent {sent}");
    let ready = r.poll(Some(BOUND))?;
    match r.recv_timeout::<String>(BOUND) {
        Err(e) if e.kind() == ErrorKind::Closed => line(
            "parent",
            format!("producer exited: poll() -> {ready} (end of file counts), recv() -> Err: {e}"),
        ),
        Err(e) => bail!("expected end of file, got: {e}"),
        Ok(v) => bail!("expected end of file, got {v:?}"),
    }
    println!();
    Ok(())
}

/// End of file needs every copy of the sending end closed: a forked child
/// holds one.
fn end_of_file() -> Result<()> {
    explain(
        "A fork copies every open file descriptor, so a forked child holds its own copy of \
         the end the parent kept. When the parent closes its end, the copy in the child \
         keeps the connection open: a child waiting for end of file waits for ever (here: \
         gives up after 300 ms). Either stop with a sentinel message (None), or close the \
         copy in the child, or start the child with spawn or forkserver, which get only \
         the descriptors passed to them.",
    );
    python(
        "a, b = Pipe()\n\
         p = mp.get_context(\"fork\").Process(target=reader, args=(b,)); p.start()\n\
         a.send(\"one\"); a.send(\"two\"); a.close()\n\
         # reader: b.recv() gets one, two, then blocks: the child's copy of a is open\n\
         # fixes: a.send(None) as a sentinel, or get_context(\"spawn\")",
    );
    for (method, sentinel) in [
        (StartMethod::Fork, false),
        (StartMethod::Fork, true),
        (StartMethod::Spawn, false),
    ] {
        let (mut ours, theirs) = pipe(true)?;
        let mut p = Guarded(
            Context::new(method)
                .builder()
                .name("reader")
                .target_with(reader, theirs),
        );
        kit::flush();
        p.start()?;
        let used = p.start_method().context("a started process has a method")?;
        ours.send(&Some("one"))?;
        ours.send(&Some("two"))?;
        if sentinel {
            ours.send(&None::<String>)?;
        }
        let t0 = Instant::now();
        ours.close();
        let (got, how) = p.join_timeout(BOUND)?;
        let took = ms_since(t0);
        let sent = if sentinel {
            "one, two, None, close"
        } else {
            "one, two, close"
        };
        line(
            "parent",
            format!("{used}: sent {sent}: the reader got {got:?}, then {how} ({took} ms)"),
        );
        let expected = match (used, sentinel) {
            (_, true) => BY_SENTINEL,
            (StartMethod::Fork, false) => BY_TIMEOUT,
            (_, false) => BY_EOF,
        };
        ensure!(
            got == ["one", "two"] && how == expected,
            "under {used}, the reader should get one, two, then {expected}"
        );
    }
    println!();
    Ok(())
}

/// `connection::wait`: whichever of several ends is ready first.
fn waiting() -> Result<()> {
    explain(
        "connection.wait(objects, timeout) blocks until at least one of several \
         connections has something to read (or a process has exited: a Process is \
         waitable too, like Python's p.sentinel), and says which: one process can serve \
         many pipes in the order they become ready, without a thread each.",
    );
    python(
        "from multiprocessing.connection import wait\n\
         for conn in wait([r0, r1, r2], timeout=10): print(conn.recv())",
    );
    let delays = [90u64, 30, 60];
    let mut ends: Vec<Option<Connection>> = Vec::new();
    let mut kids = Vec::new();
    for delay in delays {
        let (ours, theirs) = pipe(true)?;
        let mut p = Guarded(
            Process::builder()
                .name(format!("late-{delay}"))
                .target_with(late, (theirs, delay)),
        );
        kit::flush();
        p.start()?;
        ends.push(Some(ours));
        kids.push(p);
    }
    line(
        "parent",
        format!("three children answer after {delays:?} ms, on pipes 0, 1, 2"),
    );
    let t0 = Instant::now();
    let mut order = Vec::new();
    while ends.iter().any(Option::is_some) {
        let (index, objects): (Vec<usize>, Vec<&dyn Waitable>) = ends
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c as &dyn Waitable)))
            .unzip();
        let ready = connection::wait(&objects, Some(BOUND))?;
        ensure!(!ready.is_empty(), "no pipe was ready within {BOUND:?}");
        let ready: Vec<usize> = ready.into_iter().map(|r| index[r]).collect();
        for i in ready {
            let mut conn = ends[i].take().context("a pipe still waited on")?;
            let (delay, pid): (u64, i32) = conn.recv_timeout(BOUND)?;
            line(
                "parent",
                format!(
                    "wait() -> pipe {i} ready after {} ms: recv() -> ({delay}, pid {pid})",
                    ms_since(t0)
                ),
            );
            ensure!(
                delay == delays[i],
                "pipe {i} carried the answer for {delay} ms"
            );
            order.push(i);
        }
    }
    for p in &mut kids {
        p.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?;
    }
    line(
        "parent",
        format!("served in the order they answered: {order:?}, not the list's"),
    );
    println!();
    Ok(())
}

/// `send_fd` / `recv_fd`: an open file crosses to another process.
fn passing_fds() -> Result<()> {
    explain(
        "A Unix socket can carry open file descriptors (SCM_RIGHTS): the receiver gets its \
         own descriptor for the same open file, even one it could never open itself. Here \
         the tour opens a file and deletes its name, so no path leads to it any more; a \
         child receives the descriptor and writes into the file, and the tour reads what \
         it wrote. (Python: multiprocessing.reduction.send_handle / recv_handle.)",
    );
    python(
        "send_handle(conn, f.fileno(), p.pid)            # parent\n\
         fd = recv_handle(conn); os.write(fd, b\"...\")    # child",
    );
    let path = std::env::temp_dir().join(format!(
        "brood-tour-{}-{}.txt",
        os::getpid(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    line(
        "parent",
        format!(
            "opened {} as fd {}, then removed its name",
            path.display(),
            file.as_raw_fd()
        ),
    );
    let (mut ours, theirs) = pipe(true)?;
    let mut writer = Guarded(
        Process::builder()
            .name("fd-writer")
            .target_with(write_into_received, theirs),
    );
    kit::flush();
    writer.start()?;
    ours.send_fd(&file)?;
    let done: String = ours.recv_timeout(BOUND)?;
    let written = writer.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?;
    let pid = writer.pid().context("the writer has a pid")?;
    // The descriptors share one open file, so one file offset: back to 0.
    file.seek(SeekFrom::Start(0))?;
    let mut content = String::new();
    file.read_to_string(&mut content)?;
    line(
        "parent",
        format!("the writer said {done:?}; the file now holds {content:?}"),
    );
    ensure!(
        content == written && content.contains(&format!("pid {pid}")),
        "the file should hold what the writer ({pid}) wrote, {written:?}, holds {content:?}"
    );
    println!();
    Ok(())
}

/// A listener on an abstract address, with an auth key.
fn listener() -> Result<()> {
    explain(
        "A pipe is made before the child starts. Processes that meet later use a \
         Listener and a Client, on a Unix socket path, an abstract Unix name (Linux: no \
         file, gone with the listener) or TCP. With an authkey, both sides prove they know \
         it (HMAC challenge, Python's handshake) before any message is read: a client with \
         the wrong key is refused on both sides.",
    );
    python(
        "with Listener(\"\\0brood-tour\", authkey=b\"tour secret\") as l:\n\
         \x20   conn = l.accept(); print(conn.recv())\n\
         # the child: Client(\"\\0brood-tour\", authkey=b\"tour secret\").send(\"hello\")",
    );
    const KEY: &[u8] = b"tour secret";
    let address: Address = format!("@brood-tour-{}", os::getpid()).parse()?;
    let listener = Listener::bind(&address, Some(KEY))?;
    line("parent", format!("listening on {address}"));
    let mut good = Guarded(
        Process::builder()
            .name("client")
            .target_with(client, (address.to_string(), KEY.to_vec())),
    );
    kit::flush();
    good.start()?;
    let mut conn = listener.accept_timeout(BOUND)?;
    let greeting: String = conn.recv_timeout(BOUND)?;
    let sent = good.join_timeout(BOUND)?.map_err(anyhow::Error::msg)?;
    line(
        "parent",
        format!("accept() checked the key, then recv() -> {greeting:?}"),
    );
    ensure!(
        greeting == sent,
        "the listener got {greeting:?}, the client sent {sent:?}"
    );
    let mut bad = Guarded(
        Process::builder()
            .name("intruder")
            .target_with(client, (address.to_string(), b"wrong key".to_vec())),
    );
    kit::flush();
    bad.start()?;
    match listener.accept_timeout(BOUND) {
        Err(e) if e.kind() == ErrorKind::Auth => {
            line_wrapped(
                "parent",
                "a client with a wrong key: accept() -> Err(Auth):",
                &e.to_string(),
            );
        }
        Err(e) => bail!("expected an Auth error from accept, got: {e}"),
        Ok(_) => bail!("a client with the wrong key was accepted"),
    }
    match bad.join_timeout(BOUND)? {
        Err(e) => line_wrapped("parent", "and its Client::connect() -> Err(Auth):", &e),
        Ok(sent) => bail!("the intruder could send {sent:?}"),
    }
    Ok(())
}
