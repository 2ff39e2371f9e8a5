//! `stepview cdc`: fed by an unmodified bk-job (cdc.md). Debezium publishes every row change of
//! bk-job's tables (and its script-log collections) to Kafka; the translator turns them into
//! stepview's own events on `bkjob.gse.events`, re-keyed by step, with versions from the change
//! events' offsets. Everything after that topic — ingest, apply, the API — is as it is.
//!
//! - [`settings`]: the `[cdc]` section.
//! - [`source`]: which topic is which table; Debezium's envelope.
//! - [`bkjob`]: bk-job's rows, targets and log documents, parsed.
//! - [`translate`]: one change into events, or waiting, or skipped, or untranslatable.
//! - [`state`]: the translator's own RocksDB: scopes, steps, log placement, waiting changes,
//!   offsets.
//! - [`output`]: the producer; a batch is acknowledged whole before its state is stored.
//! - [`run`]: the loop; [`ops`]: `/metrics`, `/healthz`, `/readyz`.
//!
//! Owns: the translation stage. Must not: touch stepview's views (it only produces events, as
//! any producer does).

pub mod bkjob;
pub mod ops;
pub mod output;
pub mod run;
pub mod settings;
pub mod source;
pub mod state;
pub mod translate;

pub use settings::CdcSettings;

use crate::config::Config;
use crate::kafka;
use crate::shutdown::{self, Shutdown};
use crate::telemetry::cdc::CdcTelemetry;
use anyhow::{Context, Result};
use std::sync::Arc;

/// Runs the translator and its HTTP surface until SIGTERM (or a failure).
pub async fn serve(config: Config) -> Result<()> {
    anyhow::ensure!(
        !config.kafka.brokers.is_empty(),
        "stepview cdc reads and writes Kafka: set kafka.brokers (--brokers, STEPVIEW_KAFKA_BROKERS)"
    );
    kafka::ensure_topics(
        &config.kafka,
        &[&config.kafka.topic, &config.cdc.dead_letter_topic],
        kafka::DEFAULT_PARTITIONS,
    )
    .await?;
    let telemetry = Arc::new(CdcTelemetry::new());
    let readiness = Arc::new(ops::Readiness::default());
    let stop = Shutdown::new();
    let http = tokio::spawn(ops::serve(
        config.cdc.metrics_listen,
        telemetry.clone(),
        readiness.clone(),
        stop.clone(),
    ));
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown::signalled().await;
            tracing::info!("stopping: the batch in hand is not stored, and is translated again");
            stop.trigger();
        }
    });
    let translator = tokio::task::spawn_blocking({
        let stop = stop.clone();
        move || {
            let result = run::run(&config, telemetry, readiness, stop.clone());
            stop.trigger();
            result
        }
    });
    let result = translator.await.context("the translator panicked")?;
    http.await.context("the HTTP server panicked")??;
    result
}
