//! Where translated events go: `bkjob.gse.events` keyed by step (or job) id, with the
//! producers' partitioner (events.md, "Partitioning"), and untranslatable change events to the
//! dead-letter topic unchanged, with headers saying why and where from. A batch is sent whole
//! and awaited whole: [`Output::deliver`] returns once the broker acknowledged every record,
//! sending the batch again until it has (apply ignores the duplicates).
//!
//! Owns: the producer. Must not: decide what is sent.

use crate::events::{Event, MAX_EVENT_BYTES};
use crate::kafka::{client_config, KafkaSettings, Partitioner};
use crate::shutdown::Shutdown;
use crate::telemetry::cdc::{CdcTelemetry, ProduceFailed};
use anyhow::{Context, Result};
use parking_lot::Mutex;
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use std::time::Duration;

/// A change event that cannot be translated, as it arrived.
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub value: Option<Vec<u8>>,
    pub reason: String,
}

/// The first delivery error of the records in flight, if any.
#[derive(Default)]
struct Acks(Mutex<Option<String>>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.lock().get_or_insert_with(|| e.to_string());
        }
    }
}

pub struct Output {
    producer: BaseProducer<Acks>,
    events_topic: String,
    dead_letter_topic: String,
}

impl Output {
    pub fn new(
        kafka: &KafkaSettings,
        partitioner: Partitioner,
        dead_letter_topic: &str,
    ) -> Result<Output> {
        let partitioner = match partitioner {
            Partitioner::Murmur2 => "murmur2_random",
            Partitioner::Consistent => "consistent",
        };
        let producer = client_config(
            kafka,
            &[
                ("enable.idempotence", "true"),
                ("partitioner", partitioner),
                // A batch is flushed as soon as it is sent; linger only gathers what is sent
                // while the previous request is in flight.
                ("linger.ms", "5"),
                ("message.max.bytes", "4194304"),
            ],
        )
        .create_with_context(Acks::default())
        .context("cannot create the Kafka producer")?;
        Ok(Output {
            producer,
            events_topic: kafka.topic.clone(),
            dead_letter_topic: dead_letter_topic.to_owned(),
        })
    }

    /// Sends `events` and `dead_letters` and waits until the broker acknowledged all; false
    /// when stopping began first.
    pub fn deliver(
        &self,
        events: &[Event],
        dead_letters: &[DeadLetter],
        telemetry: &CdcTelemetry,
        shutdown: &Shutdown,
    ) -> Result<bool> {
        let messages: Vec<(String, Vec<u8>)> = events
            .iter()
            .map(|e| (e.key_id().to_string(), e.to_json()))
            .collect();
        let mut attempt = 0;
        loop {
            if shutdown.is_triggered() {
                return Ok(false);
            }
            *self.producer.context().0.lock() = None;
            for (key, value) in &messages {
                self.send(
                    BaseRecord::to(&self.events_topic)
                        .key(key.as_str())
                        .payload(value.as_slice()),
                )?;
            }
            for letter in dead_letters {
                self.send_dead_letter(letter)?;
            }
            let flushed = self.producer.flush(Duration::from_secs(30));
            let failed = self.producer.context().0.lock().take();
            match (flushed, failed) {
                (Ok(()), None) => return Ok(true),
                (flushed, failed) => {
                    attempt += 1;
                    let e = failed.unwrap_or_else(|| format!("{:?}", flushed.err()));
                    ProduceFailed { error: &e, attempt }.emit(telemetry);
                    shutdown.sleep(Duration::from_millis(200 * u64::from(attempt.min(25))));
                }
            }
        }
    }

    fn send_dead_letter(&self, letter: &DeadLetter) -> Result<()> {
        let partition = letter.partition.to_string();
        let offset = letter.offset.to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "stepview-error",
                value: Some(letter.reason.as_str()),
            })
            .insert(Header {
                key: "stepview-source-topic",
                value: Some(letter.topic.as_str()),
            })
            .insert(Header {
                key: "stepview-source-partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "stepview-source-offset",
                value: Some(offset.as_str()),
            });
        let mut record = BaseRecord::to(&self.dead_letter_topic).key(letter.topic.as_str());
        let length;
        match &letter.value {
            // Larger than events may be: the headers say where to find it.
            Some(v) if v.len() > MAX_EVENT_BYTES => {
                length = v.len().to_string();
                headers = headers.insert(Header {
                    key: "stepview-original-bytes",
                    value: Some(length.as_str()),
                });
            }
            Some(v) => record = record.payload(v.as_slice()),
            None => {}
        }
        self.send(record.headers(headers))
    }

    fn send<'a>(&self, mut record: BaseRecord<'a, str, [u8]>) -> Result<()> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, r)) => anyhow::bail!("cannot produce to {}: {e}", r.topic),
            }
        }
    }
}
