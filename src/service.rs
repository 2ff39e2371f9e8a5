//! The running service: opens the store, rebuilds the index, starts the Kafka source (when
//! brokers are configured) and the HTTP server, and shuts all down gracefully on a signal. If
//! ingest stops for good, so does the service, with an error: a supervisor restarts it.

use crate::apply::Applier;
use crate::cluster::secret::MembersSecret;
use crate::cluster::{members, Cluster, ClusterTiming};
use crate::config::Config;
use crate::events::Subject;
use crate::health::Health;

use crate::http::{self, AnswerCache, AppState, Auth, AuthMode, Forwarder, QueryLimits};
use crate::index::Index;
use crate::ingest::kafka::source;
use crate::ingest::Sink;
use crate::kafka;
use crate::query::Reader;
use crate::retention;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::telemetry::http::GatewayKeysReloaded;
use crate::telemetry::Telemetry;
use crate::watch::Watches;
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Store, index and the applier over them, and the waiters apply wakes: what every command that
/// reads or writes views opens.
#[derive(Clone)]
pub struct Views {
    pub store: Store,
    pub index: Arc<Index>,
    pub watches: Arc<Watches>,
    pub sink: Sink,
}

impl Views {
    /// Opens the store; nothing proportional to what it holds is read (steps are loaded into
    /// memory on their first query).
    pub fn open(config: &Config) -> Result<Views> {
        let telemetry = Arc::new(Telemetry::new());
        let (store, writer) = Store::open(
            &config.data_dir,
            &config.store.options(&config.data_dir),
            &telemetry,
        )?;
        let index = Arc::new(Index::new(
            config.index.memory_mb.bytes(),
            config.index.hot_rows_mb.bytes(),
        ));
        let watches = Arc::new(Watches::default());
        let applier = Applier::new(writer, Arc::clone(&index), Arc::clone(&watches));
        let sink = Sink {
            applier: Arc::new(applier),
            telemetry,
            health: Arc::new(Health::default()),
        };
        Ok(Views {
            store,
            index,
            watches,
            sink,
        })
    }

    /// Read access to the views, as answers take it.
    pub fn reader(&self) -> Reader {
        Reader::new(
            Arc::clone(&self.index),
            self.store.clone(),
            Arc::clone(&self.watches),
        )
    }
}

/// Serves until SIGTERM/SIGINT: stop taking requests, finish the batch in hand, flush RocksDB.
pub async fn serve(config: Config) -> Result<()> {
    raise_open_files_limit();
    let views = Views::open(&config)?;
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    run(views, &config, listener, crate::shutdown::signalled()).await
}

/// Serves `views` on `listener` (and consumes Kafka when brokers are configured) until `stop`
/// completes, or ingest stops for good (then the error says why).
pub async fn run(
    views: Views,
    config: &Config,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let auth = Auth::new(config.http.auth, &config.apps, &config.gateways)?;
    if auth.mode() == AuthMode::Off {
        tracing::warn!("authentication is OFF (http.auth = off): anyone can read every scope");
    } else if config.apps.is_empty() {
        tracing::warn!("no apps configured: every API request will be refused with 401");
    }
    let metrics_token = config
        .http
        .metrics_token_sha256
        .as_deref()
        .and_then(http::auth::parse_sha256);
    tracing::info!(addr = %listener.local_addr()?, "serving");

    let shutdown = Shutdown::new();
    let cluster = match config.cluster.name.as_str() {
        "" => None,
        name => {
            let secret = MembersSecret::load(config.cluster.secret_file.as_deref())?;
            let timing = ClusterTiming {
                ready_max_lag: config.kafka.ready_max_lag,
                handoff_timeout: config.cluster.handoff_timeout_ms.duration(),
                max_skew_ms: config.cluster.max_skew_ms.as_i64(),
                stats_interval: source::STATS_EVERY,
            };
            Some(Arc::new(Cluster::new(
                name,
                &config.cluster.advertise,
                config.cluster.partitioner,
                secret,
                timing,
            )))
        }
    };
    tokio::spawn({
        let (shutdown, cluster) = (shutdown.clone(), cluster.clone());
        let most = config.cluster.handoff_timeout_ms.duration() * 2;
        async move {
            stop.await;
            if let Some(cluster) = cluster {
                hand_off(&cluster, most).await;
            }
            shutdown.trigger();
        }
    });
    let source = if config.kafka.brokers.is_empty() {
        views.sink.health.set_stored_only();
        tracing::info!("no Kafka brokers configured: serving what is stored");
        None
    } else {
        let kcfg = config.kafka.clone();
        let topics = [kcfg.topic.as_str(), &kcfg.dlq()];
        if let Err(e) = kafka::ensure_topics(&kcfg, &topics, kafka::DEFAULT_PARTITIONS).await {
            // The source waits for the topic; the views are served meanwhile.
            tracing::warn!(error = format!("{e:#}"), "cannot create the topics now");
        }
        let (sink, shutdown, cluster) = (views.sink.clone(), shutdown.clone(), cluster.clone());
        let ingest = move || {
            let result = source::run(&kcfg, &sink, cluster.as_deref(), &shutdown);
            if let Err(e) = &result {
                tracing::error!(
                    error = format!("{e:#}"),
                    "ingest stopped for good; stopping the service (exit status 1) so that a \
                     supervisor restarts it"
                );
                sink.health.set_ingest_stopped();
                shutdown.trigger();
            }
            result
        };
        let fetcher = std::thread::Builder::new().name(source::FETCHER_THREAD.into());
        Some(
            fetcher
                .spawn(ingest)
                .context("cannot start the ingest thread")?,
        )
    };

    let members = match &cluster {
        None => None,
        Some(cluster) => {
            let (kcfg, cluster) = (config.kafka.clone(), Arc::clone(cluster));
            let topic = members::topic(&kcfg);
            if let Err(e) = kafka::ensure_members_topic(&kcfg, &topic).await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot create the members topic now"
                );
            }
            let (index, shutdown) = (Arc::clone(&views.index), shutdown.clone());
            let (telemetry, health) = (
                Arc::clone(&views.sink.telemetry),
                Arc::clone(&views.sink.health),
            );
            tracing::info!(cluster = %cluster.name, me = %cluster.me, "joining the shard set");
            Some(std::thread::spawn(move || {
                // A partition no longer served leaves memory (its steps stay on disk).
                let dropped = |partitions: &[i32]| {
                    index.evict_where(|step| {
                        cluster
                            .partition_of(step)
                            .is_some_and(|p| partitions.contains(&p))
                    })
                };
                let result = members::run(&kcfg, &cluster, &telemetry, dropped, &shutdown);
                if let Err(e) = &result {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "membership stopped for good; stopping the service (exit status 1) so \
                         that a supervisor restarts it"
                    );
                    health.set_ingest_stopped();
                    shutdown.trigger();
                }
                result
            }))
        }
    };
    let sweeper = {
        let (sink, store, shutdown) = (views.sink.clone(), config.store.clone(), shutdown.clone());
        let cluster = cluster.clone();
        std::thread::spawn(move || {
            // Only what this instance has caught up with (a shard: of the partitions it serves).
            let judged = |subject: Subject| match &cluster {
                Some(cluster) => cluster
                    .partition_of(subject.id())
                    .is_some_and(|p| cluster.caught_up(p)),
                None => sink.health.readiness().is_ok(),
            };
            let ready = || sink.health.readiness().is_ok();
            retention::run(&sink, &store, judged, ready, &shutdown)
        })
    };

    let state = Arc::new(AppState {
        reader: views.reader(),
        auth,
        telemetry: Arc::clone(&views.sink.telemetry),
        health: Arc::clone(&views.sink.health),
        limits: QueryLimits::new(
            config.http.expensive_query_slots(),
            config.http.query_timeout_ms.duration(),
        ),
        answers: Arc::new(AnswerCache::new(
            config.http.answer_cache_mb.bytes(),
            Arc::clone(&views.sink.telemetry),
        )),
        metrics_token,
        admin_token: config
            .http
            .admin_token_sha256
            .as_deref()
            .and_then(http::auth::parse_sha256),
        forwarder: cluster.as_ref().map(|_| Forwarder::default()),
        cluster,
        shutdown: shutdown.clone(),
    });
    tokio::spawn(reload_keys_on_hangup(Arc::clone(&state), shutdown.clone()));
    let stopping = shutdown.clone();
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(async move { stopping.triggered().await })
        .await
        .context("HTTP server failed")?;

    tracing::info!("shutting down");
    shutdown.trigger();
    if let Some(handle) = source {
        let joined = tokio::task::spawn_blocking(move || handle.join())
            .await
            .context("ingest thread lost")?;
        match joined {
            Ok(result) => result?,
            Err(_) => anyhow::bail!("the ingest thread panicked"),
        }
    }
    if let Some(members) = members {
        match members.join() {
            Ok(result) => result?,
            Err(_) => anyhow::bail!("the members thread panicked"),
        }
    }
    if sweeper.join().is_err() {
        anyhow::bail!("the retention thread panicked");
    }
    views.sink.applier.flush()?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// A shard leaving cleanly keeps serving until the members taking its partitions serve them
/// (clients see no 503), for at most `most`; a shard with nobody to take over leaves at once.
async fn hand_off(cluster: &Cluster, most: Duration) {
    tracing::info!("handing this instance's partitions to the other members before stopping");
    cluster.leave();
    let deadline = tokio::time::Instant::now() + most;
    while !cluster.handed_off() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads the API gateways' public keys again on every SIGHUP (all or nothing), for key rotation,
/// until the service stops (then it lets go of the state, and with it the store). SIGHUP no
/// longer ends the process.
async fn reload_keys_on_hangup(state: Arc<AppState>, shutdown: Shutdown) {
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take SIGHUP: the gateways' keys cannot be reloaded");
            return;
        }
    };
    loop {
        tokio::select! {
            hangup = hangups.recv() => if hangup.is_none() { return },
            () = shutdown.triggered() => return,
        }
        match state.auth.reload_keys() {
            Ok(true) => GatewayKeysReloaded::Reloaded.emit(&state.telemetry),
            Ok(false) => GatewayKeysReloaded::NoGateways.emit(&state.telemetry),
            Err(error) => GatewayKeysReloaded::Kept { error: &error }.emit(&state.telemetry),
        }
    }
}

/// Held long-polls and event streams keep a connection each (api.md expects 10 000 at once):
/// take all the open files the system allows this process.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let soft = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                tracing::debug!(from = soft, to = limit.rlim_max, "open files limit raised");
            }
        }
    }
}
