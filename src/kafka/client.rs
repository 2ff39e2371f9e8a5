//! Kafka clients as stepview makes them: the brokers and the operator's own librdkafka
//! properties (`[kafka.client]`: security, timeouts …) on every client, and the consumer settings
//! the live source and replay share.

use super::KafkaSettings;
use rdkafka::config::ClientConfig;

/// A client of `cfg`'s brokers: `defaults` (stepview's choices for this client), then the
/// operator's own librdkafka properties (`kafka.client`: security, timeouts …), which win.
pub fn client_config(cfg: &KafkaSettings, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (key, value) in defaults {
        c.set(*key, *value);
    }
    for (key, value) in &cfg.client {
        c.set(key, value);
    }
    c
}

/// Consumer settings shared by the live source and replay; `stats_ms` is how often librdkafka
/// reports the watermarks (see [`Watermarks`]). Partitions are assigned, never subscribed: the
/// group id only names where offsets are committed for lag tools.
pub fn consumer_config(cfg: &KafkaSettings, group_id: &str, stats_ms: u32) -> ClientConfig {
    let stats_ms = stats_ms.to_string();
    client_config(
        cfg,
        &[
            ("statistics.interval.ms", &stats_ms),
            ("group.id", group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            // A stored offset below the log start (retention dropped events not yet applied)
            // goes on from the log start; the source reports it.
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            // Freshness: a fetch that finds nothing new returns after 1 ms rather than 500.
            // Kafka answers a waiting fetch as soon as data arrives anyway; brokers that do not
            // (Tansu) hold every fetch for its whole wait, which the event then waits too
            // (benches/ingest at 10 000 events/s, produce → visible p99: 24.6 ms at 10, 11.2
            // at 2, 10.7–11.8 at 1). The price is idle fetches: at 1 ms, 1.4% of a core for
            // stepview and 11% for a local Tansu (5.5% at 10). Against Kafka, where it buys
            // nothing, `kafka.client."fetch.wait.max.ms"` can raise it.
            ("fetch.wait.max.ms", "1"),
            // What librdkafka prefetches, over all partitions: with batches bounded by bytes
            // too, this bounds what ingest holds in memory (events are at most 1 MiB).
            ("queued.max.messages.kbytes", "32768"),
            // Once that much waits, librdkafka pauses fetching for this long (1 s by default):
            // a consumer that drains the queue in 100 ms would then sit idle for 900.
            ("fetch.queue.backoff.ms", "5"),
        ],
    )
}
