//! Building and running the HTTP server.

use std::{
    collections::HashSet,
    net::TcpListener,
    sync::{Arc, RwLock},
};

use actix_web::{
    dev::Server,
    middleware::from_fn,
    web::{self, Data},
    App, HttpResponse, HttpServer,
};
use shared::{
    auth::{PasswordHashing, TokenKeys},
    config::{ApiConfig, Environment},
    error::SharedError,
    keys::Keys,
    probe::{self, Otherwise, Readiness},
};
use tokio_util::sync::CancellationToken;

use crate::{
    backlog::Backlog,
    cors,
    error::ApiError,
    extract::{payload_config, query_config},
    limits,
    long_poll::Waiters,
    openapi,
    redis_local::LocalRedis,
    request_id, revocation,
    routes::{auth, bookings, docs, goods, health, me},
    state::AppState,
};

/// How long in-flight requests may take to finish after shutdown begins.
const SHUTDOWN_GRACE_SECS: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Dependency(#[from] SharedError),
    #[error("could not bind {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not load revoked users")]
    Revocation(#[source] ApiError),
    #[error("invalid setting")]
    InvalidSetting(#[source] shared::shard::OutOfRange),
}

impl StartupError {
    /// Whether a dependency was unavailable (worth waiting for) rather than misconfigured.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Dependency(e) => e.is_unavailable(),
            Self::Revocation(e) => matches!(
                e,
                ApiError::DatabaseUnavailable(_) | ApiError::QueueUnavailable(_)
            ),
            Self::Bind { .. } | Self::InvalidSetting(_) => false,
        }
    }
}

/// A built server, bound and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
    redis_config: shared::config::RedisConfig,
    /// Ends every long-poll at once when shutdown begins.
    stopping: CancellationToken,
    /// Picks up where the startup load of deleted users left off.
    revocation: revocation::Refresher,
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
}

/// A resource that answers other methods than `allow` (its routes' methods, as `Allow`
/// lists them) with a JSON 405.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allow))
    }))
}

/// Registers every route. Shared by the server and nothing else, so the route table is
/// in one place; each route is described in `openapi` (a test holds the two together).
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz", "GET").route(web::get().to(health::healthz)))
        .service(resource("/readyz", "GET").route(web::get().to(health::readyz)))
        .service(resource("/metrics", "GET").route(web::get().to(health::metrics)))
        // Not under the `/api` scope: a scope matches whole segments, so `/api-docs`
        // is not its prefix.
        .service(resource(openapi::SPEC_PATH, "GET").route(web::get().to(docs::spec)))
        .service(
            web::scope("/api")
                // The booking route first: actix tries resources in order, and dynamic
                // segments cost a regex match each (seen in the profile).
                .service(
                    resource("/goods/{id}/bookings", "POST")
                        .route(web::post().to(bookings::create)),
                )
                .service(resource("/auth/signup", "POST").route(web::post().to(auth::signup)))
                .service(resource("/auth/login", "POST").route(web::post().to(auth::login)))
                .service(
                    resource("/goods", "GET, POST")
                        .route(web::get().to(goods::list))
                        .route(web::post().to(goods::create)),
                )
                .service(
                    resource("/goods/{id}", "GET, PATCH, DELETE")
                        .route(web::get().to(goods::detail))
                        .route(web::patch().to(goods::update))
                        .route(web::delete().to(goods::delete)),
                )
                .service(
                    resource("/goods/{id}/bookings/me", "DELETE")
                        .route(web::delete().to(bookings::cancel)),
                )
                .service(
                    resource("/goods/{id}/bookings/me/confirm", "POST")
                        .route(web::post().to(bookings::confirm)),
                )
                // The original TicketNest's route, kept for its clients.
                .service(
                    resource("/booking/{id}", "POST, DELETE")
                        .route(web::post().to(bookings::create_original))
                        .route(web::delete().to(bookings::cancel_original)),
                )
                .service(
                    resource("/bookings/requests/{request_id}", "GET")
                        .route(web::get().to(bookings::status)),
                )
                .service(resource("/me/bookings", "GET").route(web::get().to(me::bookings)))
                // Swagger UI, after every API route: `/api` redirects to `/api/`, its
                // page, which loads its files by name.
                .service(resource("", "GET").route(web::get().to(docs::swagger_ui_redirect)))
                .service(resource("/", "GET").route(web::get().to(docs::swagger_ui)))
                .service(
                    web::resource(
                        docs::SWAGGER_UI_FILES
                            .iter()
                            .map(|file| format!("/{file}"))
                            .collect::<Vec<_>>(),
                    )
                    .route(web::get().to(docs::swagger_ui))
                    .default_service(web::to(|| async {
                        Err::<HttpResponse, _>(ApiError::MethodNotAllowed("GET"))
                    })),
                ),
        );
}

impl Application {
    /// Binds `config.http.addr` and from that moment answers on it: `/healthz` `200`,
    /// `/readyz` `503` naming what it waits for, `/metrics`, anything else `503
    /// starting` (`shared::probe`), while it connects to PostgreSQL and Redis and
    /// migrates, retrying whatever is worth waiting for until `shutdown`. Then the API
    /// takes the port over.
    ///
    /// # Errors
    /// The address taken, a failure not worth waiting for (a failing migration, an
    /// unsuitable Redis, a bad setting), or the last failure when shut down meanwhile.
    pub async fn start(
        config: ApiConfig,
        shutdown: &CancellationToken,
    ) -> Result<Self, StartupError> {
        let listener =
            TcpListener::bind(&config.http.addr).map_err(|source| StartupError::Bind {
                addr: config.http.addr.clone(),
                source,
            })?;
        Self::start_on(config, listener, shutdown).await
    }

    /// Like `start`, on a listener the caller bound (tests bind port 0).
    ///
    /// # Errors
    /// As `start`.
    pub async fn start_on(
        config: ApiConfig,
        listener: TcpListener,
        shutdown: &CancellationToken,
    ) -> Result<Self, StartupError> {
        let bind_error = |source| StartupError::Bind {
            addr: config.http.addr.clone(),
            source,
        };
        shared::meter::install();
        let readiness = Readiness::starting("connecting to PostgreSQL and Redis");
        if let Ok(local) = listener.local_addr() {
            tracing::info!(
                port = local.port(),
                "pub-api bound: /healthz, /readyz and /metrics answer while it starts"
            );
        }
        let probe_listener = listener
            .try_clone()
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            })
            .map_err(bind_error)?;
        let (probe_stop, probe) =
            probe::spawn(probe_listener, readiness.clone(), Otherwise::Starting);
        let built = probe::until_started(
            "pub-api startup",
            shutdown,
            &readiness,
            StartupError::is_unavailable,
            || {
                let attempt = listener.try_clone().map_err(bind_error);
                let config = config.clone();
                async move { Self::build_with_listener(config, attempt?).await }
            },
        )
        .await;
        // The API answers on the port from here; the probe stops accepting (a request
        // it still answers meanwhile is told the truth: ready).
        if built.is_ok() {
            readiness.set_ready();
        }
        probe_stop.cancel();
        let _ = probe.await;
        built
    }

    /// Migrates, connects and binds `config.http.addr`.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable, migrations failing, or the address taken.
    pub async fn build(config: ApiConfig) -> Result<Self, StartupError> {
        let listener =
            TcpListener::bind(&config.http.addr).map_err(|source| StartupError::Bind {
                addr: config.http.addr.clone(),
                source,
            })?;
        Self::build_with_listener(config, listener).await
    }

    /// Like `build`, on a listener the caller bound (tests bind port 0).
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable, or migrations failing.
    pub async fn build_with_listener(
        config: ApiConfig,
        listener: TcpListener,
    ) -> Result<Self, StartupError> {
        shared::meter::install();
        let keys = Keys::new(config.redis.prefix.clone(), config.shards.shards)
            .map_err(StartupError::InvalidSetting)?;
        shared::db::migrate(&config.database).await?;
        let pool = shared::db::build_pool(&config.database)?;
        shared::db::check_shard_count(&pool, config.shards.shards).await?;
        let mut redis = shared::queue::connect_shared(&config.redis).await?;
        shared::queue::check_server(&mut redis).await?;
        let passwords = PasswordHashing::new(config.auth.argon2)?;
        let dummy_hash: Arc<str> = passwords.hash(&uuid::Uuid::new_v4().to_string())?.into();
        let stopping = CancellationToken::new();
        let state = AppState {
            pool,
            redis: LocalRedis::new(config.redis.clone(), redis),
            keys,
            tokens: TokenKeys::from_config(&config.auth),
            passwords,
            dummy_hash,
            goods: AppState::goods_cache(config.http.goods_cache_ttl),
            revoked: Arc::new(RwLock::new(HashSet::new())),
            backlog: Backlog::new(
                config.shards.shards,
                config.http.backlog_limit,
                config.http.redis_memory_limit_percent,
            ),
            user_rate: config.http.user_rate,
            auth_limiter: limits::address_limiter(config.http.auth_rate),
            trust_forwarded_for: config.http.trust_forwarded_for,
            hashing: limits::hashing_permits(config.http.hashing_concurrency),
            secure_cookies: config.environment == Environment::Prod,
            cors_origins: config.http.cors_origins.clone().into(),
            waiters: Waiters::new(stopping.clone()),
        };
        let mut revoked_users = revocation::Refresher::new();
        revoked_users
            .refresh(&state)
            .await
            .map_err(StartupError::Revocation)?;

        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: config.http.addr.clone(),
                source,
            })?
            .port();
        let data = Data::new(state.clone());
        let origins = state.cors_origins.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(payload_config())
                .app_data(query_config())
                .configure(routes)
                .default_service(web::to(not_found))
                .wrap(cors::middleware(origins.clone()))
                .wrap(from_fn(request_id::middleware))
        })
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_GRACE_SECS);
        if let Some(workers) = config.http.workers {
            server = server.workers(workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartupError::Bind {
                addr: config.http.addr.clone(),
                source,
            })?
            .run();
        Ok(Self {
            port,
            server,
            state,
            redis_config: config.redis,
            stopping,
            revocation: revoked_users,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and lets in-flight
    /// requests finish (up to `SHUTDOWN_GRACE_SECS`).
    ///
    /// # Errors
    /// The server failed while running.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let handle = self.server.handle();
        let upkeep = tokio::spawn(shared::meter::upkeep(shutdown.child_token()));
        let sampler = tokio::spawn(self.state.backlog.clone().run(
            self.state.redis.shared(),
            self.state.keys.clone(),
            shutdown.child_token(),
        ));
        let forgetter = self
            .state
            .auth_limiter
            .clone()
            .map(|limiter| tokio::spawn(limits::run(limiter, shutdown.child_token())));
        let listener = tokio::spawn(self.state.waiters.clone().listen(
            self.redis_config,
            self.state.keys.clone(),
            shutdown.child_token(),
        ));
        let refresher = tokio::spawn(revocation::run(
            self.state,
            self.revocation,
            shutdown.child_token(),
        ));
        let stopper = {
            let shutdown = shutdown.clone();
            let stopping = self.stopping;
            tokio::spawn(async move {
                shutdown.cancelled().await;
                tracing::info!("shutting down: finishing in-flight requests");
                // Long-polls answer now with the status they have.
                stopping.cancel();
                handle.stop(true).await;
            })
        };
        let result = self.server.await;
        shutdown.cancel();
        let _ = stopper.await;
        let _ = refresher.await;
        let _ = sampler.await;
        let _ = listener.await;
        let _ = upkeep.await;
        if let Some(forgetter) = forgetter {
            let _ = forgetter.await;
        }
        result
    }
}
