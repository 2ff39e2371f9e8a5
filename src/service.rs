//! The running service: opens the store, rebuilds the index, starts the Kafka consumer (when
//! brokers are configured) and the HTTP server, and shuts all down gracefully on a signal.

use crate::apply::Applier;
use crate::config::Config;
use crate::health::Health;
use crate::http::{self, AppState, Auth};
use crate::index::Index;
use crate::ingest::{kafka, Sink};
use crate::metrics::Metrics;
use crate::store::Store;
use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Store, index and the applier over them: what every command that reads or writes views opens.
#[derive(Clone)]
pub struct Views {
    pub store: Arc<Store>,
    pub index: Arc<Index>,
    pub sink: Sink,
}

impl Views {
    pub fn open(config: &Config) -> Result<Views> {
        let started = Instant::now();
        let store = Arc::new(Store::open(&config.data_dir, &config.store.options())?);
        let index = Arc::new(
            Index::rebuild(&store, config.store.hot_rows).context("index rebuild failed")?,
        );
        tracing::info!(
            steps = index.step_count(),
            hosts = index.host_count(),
            ms = started.elapsed().as_millis() as u64,
            data_dir = %config.data_dir.display(),
            "index rebuilt from the store"
        );
        let health = Arc::new(Health::default());
        health.set_index_ready();
        let sink = Sink {
            applier: Arc::new(Applier::new(Arc::clone(&store), Arc::clone(&index))),
            metrics: Arc::new(Metrics::new()),
            health,
        };
        Ok(Views { store, index, sink })
    }
}

/// Serves until SIGTERM/SIGINT: stop taking requests, finish the batch in hand, leave the group,
/// flush RocksDB.
pub async fn serve(config: Config) -> Result<()> {
    let views = Views::open(&config)?;
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    run(views, &config, listener, shutdown_signal()).await
}

/// Serves `views` on `listener` (and consumes Kafka when brokers are configured) until
/// `shutdown` completes.
pub async fn run(
    views: Views,
    config: &Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let auth = Auth::new(config.http.auth, &config.apps)?;
    if !auth.enabled() {
        tracing::warn!("authentication is OFF (http.auth = false): anyone can read every scope");
    } else if config.apps.is_empty() {
        tracing::warn!("no apps configured: every API request will be refused with 401");
    }
    tracing::info!(addr = %listener.local_addr()?, "serving");

    let stop = Arc::new(AtomicBool::new(false));
    let consumer = if config.kafka.brokers.is_empty() {
        views.sink.health.set_caught_up();
        tracing::info!("no Kafka brokers configured: serving what is stored");
        None
    } else {
        let kcfg = config.kafka.clone();
        kafka::ensure_topics(
            &kcfg.brokers,
            &[&kcfg.topic, &kcfg.dlq()],
            kafka::DEFAULT_PARTITIONS,
        )
        .await?;
        let (sink, store, stop, rt) = (
            views.sink.clone(),
            Arc::clone(&views.store),
            Arc::clone(&stop),
            tokio::runtime::Handle::current(),
        );
        Some(std::thread::spawn(move || {
            let result = kafka::run(&kcfg, &sink, store, rt, &stop);
            if let Err(e) = &result {
                tracing::error!(error = %format!("{e:#}"), "the Kafka consumer stopped");
                sink.health.set_apply_failing(true);
            }
            result
        }))
    };

    let state = Arc::new(AppState {
        index: Arc::clone(&views.index),
        store: Arc::clone(&views.store),
        auth,
        metrics: Arc::clone(&views.sink.metrics),
        health: Arc::clone(&views.sink.health),
    });
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server failed")?;

    tracing::info!("shutting down");
    stop.store(true, Ordering::SeqCst);
    if let Some(handle) = consumer {
        let result = tokio::task::spawn_blocking(move || handle.join())
            .await
            .context("consumer thread lost")?;
        match result {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("consumer thread panicked"),
        }
    }
    views.store.flush()?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("can install a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
