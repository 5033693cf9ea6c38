//! The Audit trail API (docs/operations.md, the API), served by `nxaudit serve`.
//!
//! HTTPS with rustls ([`tls`]), bearer JWTs ([`auth`]), the three documented
//! routes ([`routes`]) over the time-window search of [`crate::search`],
//! federation of the Engines on the Portal ([`federation`]), errors as JSON
//! arrays ([`errors`]), and the accept loop with its limits ([`server`]).
//!
//! Everything is resolved once at start-up by [`prepare`] — keys, TLS
//! material, the Engines' TLS policy from the `.env` file — so a bad
//! configuration fails the start with a message naming the key, and a
//! request never touches configuration files. The server only reads the log
//! directory; it writes nothing but the spool files of the all-Engines route
//! (unlinked at creation, under the spool directory).

pub mod auth;
pub mod errors;
pub mod federation;
pub mod head;
pub mod io;
pub mod routes;
pub mod server;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
pub use routes::{AppState, Role};
pub use server::Limits;

/// Errors setting up the API. Messages are for the operator starting it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A configuration value is missing or invalid.
    #[error("invalid API configuration: {0}")]
    Config(String),
    /// TLS material cannot be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// Binding or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Settings of `nxaudit serve` that are not (yet) in `[api]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Listen address overriding `[api] listen`.
    pub listen: Option<String>,
    /// Directory for spooling Engines' logs (all-Engines route).
    pub spool_dir: PathBuf,
    /// Most bytes spooled by one all-Engines request.
    pub spool_limit: u64,
    /// Extra CA certificates (PEM) trusted for the Engines.
    pub engine_ca: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: None,
            spool_dir: std::env::temp_dir(),
            spool_limit: 8 << 30,
            engine_ca: None,
        }
    }
}

/// A server ready to bind: shared state, TLS and limits.
#[derive(Debug)]
pub struct Prepared {
    /// Listen address.
    pub listen: String,
    /// Handler state.
    pub state: Arc<AppState>,
    /// Server TLS configuration.
    pub tls: Arc<rustls::ServerConfig>,
    /// Server limits.
    pub limits: Limits,
    /// How the Engines' certificates are checked.
    pub engine_tls: tls::EngineTls,
}

/// Names an Engine appliance answers to (see [`routes`]).
fn own_names(cfg: &Config) -> Vec<String> {
    let mut names = Vec::new();
    let host = cfg.effective_hostname();
    if let Some((short, _)) = host.split_once('.') {
        names.push(short.to_string());
    }
    names.push(host);
    for e in &cfg.api.engines {
        names.push(e.name.clone());
        names.extend(e.host.clone());
    }
    names.retain(|n| !n.is_empty());
    names.dedup();
    names
}

/// Resolves everything the server needs from the configuration.
pub fn prepare(cfg: &Config, opts: &Options) -> Result<Prepared, ApiError> {
    let api = &cfg.api;
    let role = api.role;
    let verifier = auth::Verifier::from_config(api)?;
    let server_tls = tls::server_config(&api.tls_cert, &api.tls_key)?;
    let engine_tls = tls::engine_tls_from_env_file(&api.env_file)?;
    let client_tls = tls::client_config(&engine_tls, opts.engine_ca.as_deref())?;
    // On an Engine the list names the appliance itself and is never called.
    let engines = if role == Role::Portal {
        api.engines.clone()
    } else {
        Vec::new()
    };
    let federation = federation::Federation::new(
        engines,
        client_tls,
        api.engine_timeout,
        federation::SpoolSettings {
            dir: opts.spool_dir.clone(),
            limit: opts.spool_limit,
        },
    )?;
    let state = AppState {
        role,
        log_dir: cfg.log_dir.clone(),
        own_names: own_names(cfg),
        verifier,
        federation,
    };
    Ok(Prepared {
        listen: opts.listen.clone().unwrap_or_else(|| api.listen.clone()),
        state: Arc::new(state),
        tls: server_tls,
        limits: Limits {
            max_connections: api.max_connections,
            max_connections_per_addr: api.max_connections_per_addr,
            request_timeout: api.request_timeout,
            header_timeout: api.header_timeout,
            handshake_timeout: api.handshake_timeout,
            write_timeout: api.write_timeout,
            ..Limits::default()
        },
        engine_tls,
    })
}

/// Binds the listen address.
pub async fn bind(addr: &str) -> Result<TcpListener, ApiError> {
    TcpListener::bind(addr).await.map_err(|e| ApiError::Io {
        context: format!("cannot listen on {addr}"),
        source: e,
    })
}

/// Serves on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    prepared: Prepared,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ApiError> {
    let router = routes::router(prepared.state);
    server::serve(listener, prepared.tls, router, prepared.limits, shutdown)
        .await
        .map_err(|e| ApiError::Io {
            context: "server failed".into(),
            source: e,
        })
}
