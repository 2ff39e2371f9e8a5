//! Ports and names that nothing else on this machine uses now. The tests (`tests/common`) and
//! the benchmarks (`benches/common`, which includes this file) share it.

/// A TCP port that is free on this machine now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `prefix` and a random suffix: a topic, consumer group or shard set no other run uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(rand::random::<[u8; 4]>()))
}
