//! The servers start on their own ports, answer, and stop.

use dts_testkit::{Broker, Nginx, RedisSentinel, RedisServer, wait_for_port};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn redis_ping(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 16];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn redis_starts_answers_restarts_and_stops() {
    let mut redis = RedisServer::start();
    assert_eq!(redis_ping(redis.port()), "+PONG\r\n");
    redis.restart();
    assert_eq!(redis_ping(redis.port()), "+PONG\r\n");
    let port = redis.port();
    drop(redis);
    assert!(!wait_for_port(port, Duration::from_millis(200)));
}

#[test]
fn sentinel_failover_and_a_killed_primary_each_move_the_primary_to_the_other_node() {
    let mut set = RedisSentinel::start();
    let ports = set.node_ports();
    assert_eq!(set.primary_port(), ports[0]);
    assert_eq!(set.sentinel_nodes().split(',').count(), 3);
    assert_eq!(set.failover(), ports[1]);
    assert_eq!(set.primary(), 1);
    // The old primary comes back as a replica of the new one.
    let killed = set.kill_primary();
    assert_eq!(killed, 1);
    assert_eq!(set.wait_for_new_primary(ports[1]), ports[0]);
    set.restart(killed);
    assert_eq!(redis_ping(ports[1]), "+PONG\r\n");
    assert_eq!(set.primary(), 0);
}

#[test]
fn two_brokers_get_different_ports() {
    let a = Broker::start();
    let b = Broker::start();
    assert_ne!(a.port(), b.port());
    assert!(wait_for_port(a.port(), Duration::from_secs(1)));
}

#[test]
fn nginx_proxies_to_its_upstream() {
    // A one-shot HTTP upstream.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    let nginx = Nginx::start(&[upstream]);
    let port: u16 = nginx.url().rsplit(':').next().unwrap().parse().unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");
}
