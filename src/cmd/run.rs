//! Wiring for `changeflow run`: the engine with the payment handlers, and the HTTP API,
//! stopped together.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use mongodb::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cmd::status;
use crate::config::Config;
use crate::config::role::Role;
use crate::config::routes::KAFKA;
use crate::http::payments::PaymentsApi;
use crate::http::{self, ApiState};
use crate::observe::error_text::Tidy;
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::pipeline::consume::Handlers;
use crate::pipeline::{self, Engine};
use crate::source::StartAt;
use crate::source::oplog::OplogProbe;
use crate::targets::counters::COUNTERS;

/// How long the HTTP server gets to close once the engine stopped.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A running changeflow: engine and HTTP API.
pub struct Running {
    /// Where the HTTP API listens (the bound address when the port was 0).
    pub http_address: SocketAddr,
    /// The API's state (the demo creates payments through it).
    pub api: ApiState,
    /// The client the engine reads with (the demo writes its memory workload with it).
    pub client: Client,
    stop: CancellationToken,
    engine: JoinHandle<anyhow::Result<()>>,
    http: JoinHandle<std::io::Result<()>>,
}

/// Connects, prepares indexes, binds the HTTP address and starts the engine (every role).
pub async fn start(config: Arc<Config>, start_at: StartAt) -> anyhow::Result<Running> {
    start_as(config, start_at, Role::All).await
}

/// [`start`] as `role`: the streams only (`capture`: to Kafka, no handler), the handlers
/// only (`handlers`: fed from the payments topic in a consumer group), or both.
pub async fn start_as(
    config: Arc<Config>,
    start_at: StartAt,
    role: Role,
) -> anyhow::Result<Running> {
    role.check(&config.routes).map_err(|(key, why)| {
        anyhow::Error::new(crate::config::ConfigError::Invalid {
            origin: format!("configuration, with --role {role}"),
            key,
            message: why,
        })
    })?;
    let config = Arc::new(role_routes(&config, role));
    let metrics = Arc::new(Metrics::new());
    // The handlers role reads no stream: its consumer stands in for one in `/healthz`.
    let watched: Vec<String> = match role {
        Role::Handlers => vec![crate::pipeline::consume::health_name(&config)],
        _ => config.watch.iter().map(|w| w.database.clone()).collect(),
    };
    let health = Arc::new(
        Health::new(watched.iter().map(String::as_str)).with_primary_bound(
            std::time::Duration::from_millis(config.health.no_primary_after_ms),
        ),
    );
    let observed = (health.clone(), metrics.clone());
    let client = crate::source::connect::connect_observed(&config.mongodb.uri, move |writable| {
        let (health, metrics) = &observed;
        if !writable && health.no_primary_for().is_none() {
            tracing::warn!("MongoDB: no writable primary (an election, or a majority down)");
        } else if writable && health.no_primary_for().is_some() {
            tracing::info!("MongoDB: a writable primary is back");
        }
        health.set_primary(writable);
        metrics.mongodb_writable_primary.set(i64::from(writable));
    })
    .await?;
    let targets = crate::targets::build(&client, &config)
        .await
        .context("preparing the handlers and the Kafka sink")?;
    let payments_db = client.database(&config.payments.database);
    let payments = PaymentsApi::new(payments_db.collection(&config.payments.collection));
    payments
        .ensure_indexes()
        .await
        .context("creating the payments index")?;
    let api = ApiState {
        payments,
        counters: payments_db.collection(COUNTERS),
        metrics: metrics.clone(),
        health: health.clone(),
    };
    let listener = tokio::net::TcpListener::bind(&config.http.address)
        .await
        .with_context(|| format!("listening on {} (http.address)", config.http.address))?;
    let http_address = listener.local_addr().context("reading the bound address")?;
    tracing::info!(address = %http_address, "HTTP API listening");
    let stop = CancellationToken::new();
    let router = http::router(api.clone());
    let http = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    let stopped = stop.clone().cancelled_owned();
    let engine = if role == Role::Handlers {
        // Where capture will publish: subscribing waits for no one.
        let kafka = &config.kafka;
        crate::targets::kafka::ensure_topics(kafka, &[&kafka.topic(&kafka.topics.payments)])
            .await
            .context("creating the payments topic")?;
        let handlers = Handlers::new(
            &client,
            config.clone(),
            &targets,
            metrics.clone(),
            health.clone(),
        );
        tokio::spawn(async move { Ok(handlers.run(stopped).await?) })
    } else {
        let engine = Engine::new(
            client.clone(),
            config.clone(),
            &targets,
            metrics.clone(),
            health.clone(),
            start_at,
        )
        .with_role(role);
        tokio::spawn(pipeline::stuck::watch_sources(
            config.clone(),
            metrics.clone(),
            health.clone(),
            stop.clone(),
        ));
        tokio::spawn(watch_headroom(
            client.clone(),
            config.clone(),
            metrics.clone(),
            health.clone(),
            stop.clone(),
        ));
        tokio::spawn(async move { Ok(engine.run(stopped).await?) })
    };
    Ok(Running {
        http_address,
        api,
        client,
        stop,
        engine,
        http,
    })
}

/// `config` with the routes `role` runs: capture publishes only (the handlers run
/// elsewhere), handlers handle only (capture published what they consume).
fn role_routes(config: &Config, role: Role) -> Config {
    let mut config = config.clone();
    let keep: fn(&str) -> bool = match role {
        Role::All => return config,
        Role::Capture => |t| t == KAFKA,
        Role::Handlers => |t| t != KAFKA,
    };
    config.routes.retain(keep);
    if role == Role::Handlers {
        // Raw collections are capture's to publish.
        config.kafka.raw.clear();
    }
    config
}

/// Measures every stream's oplog headroom and checkpoint lag each `history.check_every_ms`
/// for `/metrics`, and flags `/healthz` degraded (with a warning logged) while a stream's
/// headroom is below `history.headroom_warning_seconds`.
async fn watch_headroom(
    client: Client,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let mut probe = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(
        config.history.check_every_ms,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if probe.is_none() {
            match OplogProbe::connect(&client, &config.mongodb.uri).await {
                Ok(p) => probe = Some(p),
                Err(e) => {
                    tracing::warn!(error = %Tidy(&e), "cannot read the oplog windows; headroom metrics unavailable");
                    continue;
                }
            }
        }
        status::gather(&client, &config, probe.as_ref())
            .await
            .publish(&metrics, &health);
    }
}

impl Running {
    /// Waits until every stream is open (changes made from then on are seen even on a
    /// first start without checkpoint), or fails after `timeout`.
    pub async fn ready(&self, timeout: std::time::Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.api.health.all_open() {
            anyhow::ensure!(
                !self.engine.is_finished(),
                "the engine stopped while opening its streams; see the log"
            );
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the change streams did not open within {timeout:?}: {:?}",
                self.api.health.snapshot()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Runs until `shutdown` completes or the engine fails, then stops both parts (the
    /// engine drains and stores its final checkpoints).
    pub async fn until(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let engine_result = tokio::select! {
            _ = shutdown => None,
            result = &mut self.engine => Some(result),
        };
        self.stop.cancel();
        let engine_result = match engine_result {
            Some(r) => r,
            None => (&mut self.engine).await,
        };
        // Clients holding connections open must not hold up the stop.
        match tokio::time::timeout(CLOSE_TIMEOUT, &mut self.http).await {
            Ok(joined) => {
                if let Err(e) = joined.context("HTTP task")? {
                    tracing::warn!(error = %Tidy(&e), "HTTP server stopped with an error");
                }
            }
            Err(_) => self.http.abort(),
        }
        crate::source::connect::close(self.client).await;
        engine_result.context("engine task")??;
        Ok(())
    }
}
