//! The dead-letter topic: bad messages go there unchanged, with headers saying why
//! (`stepview-error`) and where from (`stepview-source-topic`, `-partition`, `-offset`), before
//! the batch's offsets may pass them (events.md, "Bad events").
//!
//! A batch's dead letters are sent together and awaited together: a burst of bad events costs
//! one round trip, not one each. A letter the topic refuses as too large is cut on every refusal
//! (to 1 MiB, then a quarter each time) and finally sent with headers only, so that no refusal
//! is ever retried at the same size and no partition stalls on it; a header says how long it was.

use super::read::BadMessages;
use crate::events::{BadEvent, MAX_EVENT_BYTES};
use crate::kafka::client_config;
use crate::kafka::KafkaSettings;
use crate::shutdown::Shutdown;
use crate::telemetry::ingest::DeadLetterUnwritable;
use crate::telemetry::Telemetry;
use anyhow::{Context, Result};
use parking_lot::Mutex;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Message};
use std::sync::Arc;
use std::time::Duration;

/// Collects the delivery report of every letter, by its index in the batch.
#[derive(Default)]
struct Reports(Mutex<Vec<(usize, Result<(), KafkaError>)>>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, letter: usize) {
        let outcome = result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone());
        self.0.lock().push((letter, outcome));
    }
}

pub struct DeadLetters {
    producer: BaseProducer<Reports>,
    topic: String,
    telemetry: Arc<Telemetry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// To be handed to librdkafka now.
    ToSend,
    InFlight,
    /// Failed for another reason than its size (broker unreachable …): again after a pause.
    Later,
    Done,
}

/// One bad message on its way.
struct Letter<'m> {
    msg: &'m BorrowedMessage<'m>,
    bad: &'m BadEvent,
    /// How much of the payload is sent: all of it at first, less after each "too large";
    /// `None`: headers only.
    payload_len: Option<usize>,
    state: State,
}

impl Letter<'_> {
    /// Cuts what is sent after a "too large" refusal; false when nothing is left to cut.
    fn shrink(&mut self) -> bool {
        self.payload_len = match self.payload_len {
            Some(len) if len > MAX_EVENT_BYTES => Some(MAX_EVENT_BYTES),
            Some(len) if len > 64 => Some(len / 4),
            Some(_) => None,
            None => return false,
        };
        true
    }

    fn headers(&self) -> OwnedHeaders {
        let original = self.msg.payload().map(<[u8]>::len);
        let cut_from = (self.payload_len != original).then(|| original.unwrap_or(0).to_string());
        let fields = [
            ("stepview-error", Some(self.bad.to_string())),
            ("stepview-source-topic", Some(self.msg.topic().to_owned())),
            (
                "stepview-source-partition",
                Some(self.msg.partition().to_string()),
            ),
            (
                "stepview-source-offset",
                Some(self.msg.offset().to_string()),
            ),
            ("stepview-truncated-from-bytes", cut_from),
        ];
        fields
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)))
            .fold(OwnedHeaders::new(), |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(&value),
                })
            })
    }
}

fn too_large(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge)
}

impl DeadLetters {
    pub fn new(cfg: &KafkaSettings, telemetry: Arc<Telemetry>) -> Result<DeadLetters> {
        let mut config = client_config(
            cfg,
            &[
                ("message.timeout.ms", "30000"),
                // An over-limit event must reach the topic unchanged, so allow what the
                // events topic took.
                (
                    "message.max.bytes",
                    crate::kafka::admin::TOPIC_MESSAGE_MAX_BYTES,
                ),
                ("linger.ms", "5"),
            ],
        );
        for (key, value) in &cfg.dlq_producer {
            config.set(key, value);
        }
        let producer = config
            .create_with_context(Reports::default())
            .context("cannot create the Kafka producer for the dead-letter topic")?;
        Ok(DeadLetters {
            producer,
            topic: cfg.dlq(),
            telemetry,
        })
    }

    /// Writes every letter of `bad` and waits until the topic has them all; false if stopping
    /// came first (the batch is then read again after a restart).
    pub fn send(&self, bad: &BadMessages<'_>, shutdown: &Shutdown) -> bool {
        let mut letters: Vec<Letter<'_>> = bad
            .iter()
            .map(|(msg, bad)| {
                tracing::warn!(
                    partition = msg.partition(),
                    offset = msg.offset(),
                    reason = %bad,
                    "bad event sent to the dead-letter topic"
                );
                Letter {
                    msg,
                    bad,
                    payload_len: msg.payload().map(<[u8]>::len),
                    state: State::ToSend,
                }
            })
            .collect();
        let mut backoff = Duration::from_millis(100);
        loop {
            // One wait for the whole batch: librdkafka reports on every message within its
            // message.timeout.ms.
            loop {
                for (i, letter) in letters.iter_mut().enumerate() {
                    if letter.state == State::ToSend {
                        self.enqueue(i, letter);
                    }
                }
                if !letters.iter().any(|l| l.state == State::InFlight) {
                    break;
                }
                if shutdown.is_triggered() {
                    return false;
                }
                self.producer.poll(Duration::from_millis(50));
                for (i, outcome) in std::mem::take(&mut *self.producer.context().0.lock()) {
                    self.settle(&mut letters[i], outcome);
                }
            }
            if letters.iter().all(|l| l.state == State::Done) {
                return true;
            }
            if shutdown.sleep(backoff) {
                return false;
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            for letter in &mut letters {
                if letter.state == State::Later {
                    letter.state = State::ToSend;
                }
            }
        }
    }

    /// Hands one letter to librdkafka, cutting it while librdkafka refuses its size locally.
    fn enqueue(&self, i: usize, letter: &mut Letter<'_>) {
        while letter.state == State::ToSend {
            let mut record: BaseRecord<'_, [u8], [u8], usize> =
                BaseRecord::with_opaque_to(&self.topic, i).headers(letter.headers());
            if let Some(key) = letter.msg.key() {
                record = record.key(key);
            }
            if let (Some(payload), Some(len)) = (letter.msg.payload(), letter.payload_len) {
                record = record.payload(&payload[..len]);
            }
            match self.producer.send(record) {
                Ok(()) => letter.state = State::InFlight,
                Err((e, _)) => self.settle(letter, Err(e)),
            }
        }
    }

    /// What a send's outcome leaves a letter to do: nothing, the same again later, or (refused
    /// as too large) a shorter one now.
    fn settle(&self, letter: &mut Letter<'_>, outcome: Result<(), KafkaError>) {
        let (partition, offset) = (letter.msg.partition(), letter.msg.offset());
        letter.state = match outcome {
            Ok(()) => State::Done,
            Err(e) if too_large(&e) => {
                if letter.shrink() {
                    tracing::warn!(
                        partition,
                        offset,
                        bytes = letter.payload_len.unwrap_or(0),
                        "the dead-letter topic refuses the message as too large; sending less"
                    );
                    State::ToSend
                } else {
                    DeadLetterUnwritable { partition, offset }.emit(&self.telemetry);
                    State::Done
                }
            }
            Err(e) => {
                tracing::error!(partition, offset, error = %e, "cannot write to the dead-letter topic; retrying");
                State::Later
            }
        };
    }
}
