//! The Stockade daemon (`stockade serve`): an HTTP API over every driver, on TCP (bearer tokens)
//! and on a unix socket (the peer's uid is checked). Exec output is stored as it arrives, so a
//! client can replay any exec from any sequence number, and a daemon killed with `-9` picks every
//! running exec up again when it restarts. See ARCHITECTURE.md for the whole picture.

pub mod api;
pub mod db;
pub mod e2b;
pub mod error;
pub mod events;
pub mod execs;
pub mod metrics;
pub mod redact;
pub mod tasks;
pub mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use stockade_core::Driver;
pub use stockade_router::Router as Drivers;
use tokio::net::{TcpListener, UnixListener};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::db::Db;
use crate::error::ApiError;
use crate::events::Events;
use crate::execs::Execs;

/// Largest request body: one file or archive upload.
pub const MAX_BODY: usize = 64 << 20;

/// How the daemon is run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TCP address (bearer tokens required), if any.
    pub listen: Option<SocketAddr>,
    /// Unix socket path (the peer's uid must be ours or root), if any.
    pub socket: Option<PathBuf>,
    /// `$STOCKADE_HOME`.
    pub home: PathBuf,
    /// The database: `postgres://...`, a SQLite file path or `sqlite://PATH`;
    /// `$STOCKADE_HOME/stockade.db` when absent.
    pub db: Option<String>,
    /// Output of finished execs is kept this long.
    pub retention: Duration,
    /// Let API callers name paths on the daemon's host: mounts, a rootfs, code from a directory
    /// or a `file://` repository, a push to a local repository. Off by default: a token then
    /// reaches only what sandboxes hold.
    pub allow_host_paths: bool,
    /// The E2B-compatible surface's settings.
    pub e2b: e2b::E2bConfig,
}

impl ServerConfig {
    /// A daemon embedded in another program (a test, the benchmark): no listener yet, the
    /// default database under `home`, an hour of retention, no host paths.
    pub fn embedded(home: impl Into<PathBuf>) -> Self {
        ServerConfig {
            listen: None,
            socket: None,
            home: home.into(),
            db: None,
            retention: Duration::from_secs(3600),
            allow_host_paths: false,
            e2b: e2b::E2bConfig::default(),
        }
    }
}

/// The database `db` names (`postgres://...`, `sqlite://PATH` or a path), or the default
/// SQLite file under `home`.
pub fn db_url(home: &std::path::Path, db: Option<&str>) -> String {
    match db {
        Some(url) if !url.is_empty() => url.to_owned(),
        _ => home.join("stockade.db").display().to_string(),
    }
}

/// What every handler shares.
pub struct AppState {
    pub driver: Arc<Drivers>,
    pub db: Arc<Db>,
    pub execs: Arc<Execs>,
    pub events: Arc<Events>,
    pub secrets: stockade_secrets::SecretStore,
    pub metrics: Arc<metrics::Metrics>,
    /// Log one line per request to stderr (`stockade serve` does; an embedded server may not).
    pub access_log: std::sync::atomic::AtomicBool,
    /// Tasks running now.
    pub tasks: tasks::Running,
    /// `$STOCKADE_HOME`.
    pub home: PathBuf,
    /// See [`ServerConfig::allow_host_paths`].
    pub allow_host_paths: bool,
    /// See [`ServerConfig::e2b`].
    pub e2b: e2b::E2bConfig,
}

impl AppState {
    /// Refuses a request that names a host path unless the daemon allows them.
    pub fn check_host_path(&self, field: &str, what: &str) -> Result<(), ApiError> {
        if self.allow_host_paths {
            return Ok(());
        }
        Err(ApiError {
            field: Some(field.into()),
            ..ApiError::of(stockade_core::ErrorKind::Forbidden,
                format!("{what} names a path on the daemon's host; start `stockade serve --allow-host-paths` to allow that"),
            )
        })
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppState")
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Stockade", description = "Sandboxes for AI coding agents: one API over every driver."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(stockade_api::StatusChange, stockade_api::WsInput, stockade_api::ApiExecEvent, stockade_api::Encoding, stockade_api::ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes and the OpenAPI document they make.
pub fn routes(state: Arc<AppState>) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (router, openapi) = api::routes(OpenApiRouter::with_openapi(ApiDoc::openapi()))
        .with_state(Arc::clone(&state))
        .split_for_parts();
    let doc = openapi.clone();
    let router = router
        .merge(ui::router(Arc::clone(&state)))
        .merge(e2b::control::routes().with_state(Arc::clone(&state)))
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc) }
            }),
        )
        .fallback(|| async { ApiError::of(stockade_core::ErrorKind::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::of(
                stockade_core::ErrorKind::MethodNotAllowed,
                "this route does not take that method",
            )
        })
        // envd's requests (an `E2b-Sandbox-Id` header) are answered before any route.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            e2b::envd::dispatch,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state, access_log));
    (router, openapi)
}

/// Counts and logs every request: method, path, status, time. Never bodies or headers.
async fn access_log(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let route = req.extensions().get::<axum::extract::MatchedPath>().cloned();
    // One span per request: whatever a handler logs carries its method and path.
    let span = tracing::info_span!("request", %method, %path);
    let response = tracing::Instrument::instrument(next.run(req), span).await;
    let status = response.status();
    state.metrics.request(
        method.as_str(),
        route.as_ref().map(|r| r.as_str()),
        status.as_u16(),
        started.elapsed().as_secs_f64(),
    );
    if !state.access_log.load(Ordering::Relaxed) {
        return response;
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        target: "stockade::access",
        %method,
        %path,
        status = status.as_u16(),
        ms,
        "{method} {path} {} {ms:.1}ms",
        status.as_u16()
    );
    response
}

pub use axum;

/// The routes as the TCP listener serves them: every request but the public ones needs a token.
pub fn tcp_app(state: Arc<AppState>) -> axum::Router {
    let (app, _) = routes(Arc::clone(&state));
    app.layer(middleware::from_fn_with_state(state, bearer_auth))
}

/// Paths anyone may read.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/openapi.json") || ui::is_public(path)
}

/// TCP: a bearer token from `stockade token create` (header, or the `stockade_token` cookie
/// for browsers, whose WebSockets cannot send headers).
async fn bearer_auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    // envd's requests carry the sandbox's access token instead, checked by `e2b::envd`.
    if is_public(req.uri().path()) || req.headers().contains_key("e2b-sandbox-id") {
        return next.run(req).await;
    }
    if e2b::control::is_control_path(req.uri().path()) {
        return e2b_key_auth(state, req, next).await;
    }
    let headers = req.headers();
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").ok_or(()));
    let from_cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| {
            c.split(';')
                .find_map(|kv| kv.trim().strip_prefix("stockade_token="))
        })
        .filter(|_| ui::same_origin(headers));
    let token = match (from_header, from_cookie) {
        (Some(Ok(t)), _) => t,
        (Some(Err(())), _) => {
            return ApiError::unauthorized("the Authorization header must be `Bearer TOKEN`").into_response()
        }
        (None, Some(t)) => t,
        (None, None) => {
            return ApiError::unauthorized(
                "a bearer token is required (make one with `stockade token create`)",
            )
            .into_response()
        }
    };
    match state.db.token_valid(token.trim()).await {
        Ok(true) => next.run(req).await,
        Ok(false) => ApiError::unauthorized("the token is not valid").into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// E2B's control plane: its SDKs send the key as `X-API-Key` (a Stockade token); a bearer
/// token works as well. Refusals are E2B-shaped.
async fn e2b_key_auth(state: Arc<AppState>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let token = e2b::control::api_key(headers).or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    });
    let refuse = |message: &str| {
        e2b::control::E2bError::new(axum::http::StatusCode::UNAUTHORIZED, message).into_response()
    };
    let Some(token) = token else {
        return refuse("an API key is required (X-API-Key: a token from `stockade token create`)");
    };
    match state.db.token_valid(token.trim()).await {
        Ok(true) => next.run(req).await,
        Ok(false) => refuse("the API key is not valid"),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// The uid of a unix-socket peer.
#[derive(Debug, Clone, Copy)]
pub struct PeerUid(Option<u32>);

impl Connected<IncomingStream<'_, UnixListener>> for PeerUid {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        PeerUid(stream.io().peer_cred().ok().map(|c| c.uid()))
    }
}

/// Unix socket: the peer must be this daemon's user or root.
async fn peer_auth(ConnectInfo(peer): ConnectInfo<PeerUid>, req: Request, next: Next) -> Response {
    let me = nix::unistd::geteuid().as_raw();
    match peer.0 {
        Some(uid) if uid == me || uid == 0 => next.run(req).await,
        Some(uid) => ApiError::of(
            stockade_core::ErrorKind::Forbidden,
            format!("uid {uid} may not use this daemon's socket (only uid {me} and root)"),
        )
        .into_response(),
        None => ApiError::unauthorized("the peer's credentials could not be read").into_response(),
    }
}

/// Builds the state over `drivers` (the binary assembles them): database, exec followers.
pub async fn state(config: &ServerConfig, drivers: Arc<Drivers>) -> stockade_core::Result<Arc<AppState>> {
    let url = db_url(&config.home, config.db.as_deref());
    let db = Arc::new(
        Db::open(&url)
            .await
            .map_err(|e| stockade_core::Error::backend("database", e))?,
    );
    let events = Arc::new(Events::default());
    let secrets = stockade_secrets::SecretStore::new(&config.home);
    let metrics = Arc::new(metrics::Metrics::default());
    let execs = Execs::new(
        Arc::clone(&db),
        Arc::clone(&drivers) as Arc<dyn Driver>,
        Arc::clone(&events),
        secrets.clone(),
        Arc::clone(&metrics),
    );
    Ok(Arc::new(AppState {
        driver: drivers,
        db,
        execs,
        events,
        secrets,
        metrics,
        access_log: std::sync::atomic::AtomicBool::new(true),
        tasks: tasks::Running::default(),
        home: config.home.clone(),
        allow_host_paths: config.allow_host_paths,
        e2b: config.e2b.clone(),
    }))
}

/// Runs the daemon over `drivers` until `shutdown` resolves.
pub async fn serve(
    config: ServerConfig,
    drivers: Arc<Drivers>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> stockade_core::Result<()> {
    let state = state(&config, drivers).await?;
    let recovered = state.execs.recover().await;
    if recovered > 0 {
        tracing::info!("re-attached {recovered} running exec(s)");
    }
    tasks::recover(&state).await;
    let (app, _) = routes(Arc::clone(&state));
    let io = |what: &str, e: std::io::Error| stockade_core::Error::backend(what.to_owned(), e);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    if let Some(addr) = config.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| io(&format!("listen on {addr}"), e))?;
        let app = app
            .clone()
            .layer(middleware::from_fn_with_state(Arc::clone(&state), bearer_auth));
        let mut stop = stop_rx.clone();
        tracing::info!(
            "listening on http://{}",
            listener.local_addr().map_err(|e| io("listen", e))?
        );
        // No Nagle: a stream's small frames (an exec's events, Connect envelopes) would
        // otherwise wait for the client's delayed ACK, 40 ms each.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        servers.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        });
    }
    if let Some(path) = &config.socket {
        let _ = std::fs::remove_file(path);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let listener =
            UnixListener::bind(path).map_err(|e| io(&format!("listen on {}", path.display()), e))?;
        let app = app
            .clone()
            .layer(middleware::from_fn(peer_auth))
            .into_make_service_with_connect_info::<PeerUid>();
        let mut stop = stop_rx.clone();
        tracing::info!("listening on unix:{}", path.display());
        servers.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        });
    }
    if servers.is_empty() {
        return Err(stockade_core::Error::invalid(
            "listen",
            "give --listen ADDR, --socket PATH or both",
        ));
    }
    tokio::spawn(reaper(Arc::clone(&state), config.retention));
    tokio::select! {
        _ = shutdown => {}
        Some(ended) = servers.join_next() => {
            if let Ok(Err(e)) = ended {
                return Err(io("serve", e));
            }
        }
    }
    let _ = stop_tx.send(true);
    // Kept execs run on in their sandboxes; a restarted daemon re-attaches to them.
    if let Some(path) = &config.socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// At start, removes orphaned containers. Then every 2 s: publishes status changes seen in the drivers (a sandbox lost, stopped or removed
/// outside the daemon), destroys sandboxes past their TTL or idle timeout, and drops the output
/// of execs finished longer ago than the retention.
async fn reaper(state: Arc<AppState>, retention: Duration) {
    // Orphans first: what a driver made for this home but has no record of (a create cut short
    // by a crash, say). A driver that cannot be built here has nothing to collect.
    let registry = state.driver.registry();
    for name in registry.names() {
        let Ok(driver) = registry.driver(name) else {
            continue;
        };
        let Some(admin) = driver.admin() else {
            continue;
        };
        match admin.gc().await {
            Ok(removed) => {
                for what in removed {
                    tracing::info!("gc: {name}: removed {what}");
                }
            }
            Err(e) => tracing::warn!("gc: {name}: {e}"),
        }
    }
    let mut known: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut last_prune = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        e2b::reap(&state).await;
        let now = stockade_store::now_secs();
        let Ok(sandboxes) = state.driver.list().await else {
            continue;
        };
        let mut seen = std::collections::HashMap::new();
        for s in &sandboxes {
            let status = s.status.as_str().to_owned();
            if known.get(s.id.as_str()) != Some(&status) && !known.is_empty() {
                state
                    .events
                    .publish(crate::events::sandbox(s.id.as_str(), &status));
            }
            seen.insert(s.id.to_string(), status);
            let expired = s.spec.ttl.is_some_and(|ttl| s.created_at + ttl.as_secs() <= now);
            if expired && state.driver.destroy(&s.id).await.is_ok() {
                let _ = state.db.forget_sandbox(s.id.as_str()).await;
                state
                    .events
                    .publish(crate::events::sandbox(s.id.as_str(), "destroyed"));
            }
        }
        for gone in known.keys().filter(|id| !seen.contains_key(*id)) {
            state.events.publish(crate::events::sandbox(gone, "destroyed"));
            let _ = state.db.forget_sandbox(gone).await;
        }
        known = seen;
        for id in state.db.idle_sandboxes(now).await.unwrap_or_default() {
            // Only sandboxes this daemon's drivers hold: others sharing the database judge theirs.
            let Some(s) = sandboxes.iter().find(|s| s.id.as_str() == id) else {
                continue;
            };
            tracing::info!("sandbox {id} idle past its timeout, destroying");
            if state.driver.destroy(&s.id).await.is_ok() {
                let _ = state.db.forget_sandbox(&id).await;
                state.events.publish(crate::events::sandbox(&id, "destroyed"));
            }
        }
        if last_prune.elapsed() > Duration::from_secs(60) {
            last_prune = Instant::now();
            let _ = state
                .db
                .prune_output(now.saturating_sub(retention.as_secs()))
                .await;
        }
    }
}
