//! The private redis-server the other tests stand on.

use brood_redis::LocalServer;

#[test]
fn a_local_server_answers_and_keeps_its_data_across_a_kill() {
    let mut server = LocalServer::start().expect("redis-server (the test command installs it)");
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    // appendfsync everysec: make the write durable before the SIGKILL.
    let _: () = redis::cmd("BGREWRITEAOF").query(&mut con).unwrap_or(());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let old = server.pid();
    server.restart().unwrap();
    assert_ne!(server.pid(), old);
    let mut con = client.get_connection().unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(v, "v");
}

#[test]
fn a_password_is_required_when_set() {
    let server = LocalServer::start_with_password(Some("pw")).unwrap();
    let bad = format!("redis://127.0.0.1:{}/", server.port());
    let mut con = redis::Client::open(bad).unwrap().get_connection().unwrap();
    let err = redis::cmd("PING").query::<String>(&mut con).unwrap_err();
    assert!(err.to_string().to_lowercase().contains("auth"), "{err}");
    let mut con = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}
