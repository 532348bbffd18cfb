//! A private `redis-server` for tests, benchmarks and the tour.
//!
//! Nothing in brood-redis needs a Redis that is already running: tests start
//! their own with [`LocalServer::start`] on a free loopback port, in a
//! temporary directory of its own, with the append-only file on, and stop it
//! (and remove the directory) when the value is dropped.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A `redis-server` child process on a private loopback port.
///
/// ```no_run
/// let server = brood_redis::LocalServer::start()?;
/// let client = redis::Client::open(server.url())?;
/// let mut con = client.get_connection()?;
/// let pong: String = redis::cmd("PING").query(&mut con)?;
/// assert_eq!(pong, "PONG");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LocalServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    password: Option<String>,
}

impl LocalServer {
    /// Starts `redis-server` on a free loopback port, with the append-only
    /// file on, and waits (up to 10 s) until it answers.
    ///
    /// Fails with `NotFound` and a message saying how to install it when
    /// there is no `redis-server` on `PATH`.
    ///
    /// ```no_run
    /// let server = brood_redis::LocalServer::start()?;
    /// assert!(server.url().starts_with("redis://127.0.0.1:"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn start() -> io::Result<LocalServer> {
        LocalServer::start_with_password(None)
    }

    /// As [`start`](LocalServer::start), with `requirepass` set: clients
    /// must authenticate with `password`.
    ///
    /// ```no_run
    /// let server = brood_redis::LocalServer::start_with_password(Some("s3cret"))?;
    /// assert!(server.url().contains(":s3cret@"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn start_with_password(password: Option<&str>) -> io::Result<LocalServer> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "brood-redis-{}-{}-{}",
            std::process::id(),
            port,
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut server = LocalServer {
            child: None,
            port,
            dir,
            password: password.map(str::to_owned),
        };
        server.spawn()?;
        Ok(server)
    }

    /// Whether a `redis-server` binary can be found on `PATH`.
    ///
    /// ```
    /// let _ = brood_redis::LocalServer::available();
    /// ```
    pub fn available() -> bool {
        Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The URL clients connect with: `redis://[:password@]127.0.0.1:PORT/`.
    ///
    /// ```no_run
    /// let server = brood_redis::LocalServer::start()?;
    /// println!("{}", server.url());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// The TCP port it listens on.
    ///
    /// ```no_run
    /// let server = brood_redis::LocalServer::start()?;
    /// assert!(server.port() > 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    ///
    /// ```no_run
    /// let server = brood_redis::LocalServer::start()?;
    /// assert!(server.pid().is_some());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The directory holding its append-only file.
    ///
    /// ```no_run
    /// let server = brood_redis::LocalServer::start()?;
    /// assert!(server.dir().exists());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILLs the server (no shutdown save: what survives is what its
    /// append-only file holds) and reaps it.
    ///
    /// ```no_run
    /// let mut server = brood_redis::LocalServer::start()?;
    /// server.kill();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, and starts it again on the same port
    /// and directory, so it reloads its append-only file; returns once it
    /// has loaded it and answers commands.
    ///
    /// ```no_run
    /// let mut server = brood_redis::LocalServer::start()?;
    /// server.restart()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    fn spawn(&mut self) -> io::Result<()> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--dir", &self.dir.to_string_lossy()])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "everysec"])
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .args(["--protected-mode", "no"])
            .args(["--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "redis-server not found on PATH (install it: apt-get install redis-server)",
                )
            } else {
                e
            }
        })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port))
                && ready(stream)
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(io::Error::other(format!(
                    "redis-server exited at start ({status}) on port {}",
                    self.port
                )));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "redis-server did not listen on port {} within 10 s",
                        self.port
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the server answers commands (not `-LOADING` its append-only
/// file any more): a PING answered with `+PONG`, or with an auth error
/// when a password is set.
fn ready(mut stream: TcpStream) -> bool {
    use std::io::{Read, Write};
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) if n > 0 => {
            let reply = &buf[..n];
            reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH")
        }
        _ => false,
    }
}

/// Makes each server's directory name unique within this process.
static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A loopback port nobody listens on now (the kernel's pick).
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}
