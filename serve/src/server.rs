//! Running the server: [`serve`] binds (on the caller's thread, so a bad address is an error
//! right away), then runs axum on a tokio runtime of its own in a thread of its own (the job that
//! calls it is not async), until the caller's shutdown future completes or [`Serving::stop`] is
//! called. It binds to loopback unless [`ServeOptions::allow_remote`] says otherwise.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{oneshot, Semaphore};

use crate::config::ServeConfig;
use crate::http::{router, AppState};
use crate::source::EdgeSource;

/// Where and how to listen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// The address to bind (port 0: any free port; [`Serving::addr`] tells which).
    pub addr: SocketAddr,
    /// Whether a non-loopback address may be bound (the map has no authentication: only say
    /// yes behind something that has).
    pub allow_remote: bool,
}

impl ServeOptions {
    /// Listen on `addr`, which must be a loopback address.
    pub const fn loopback(addr: SocketAddr) -> Self {
        ServeOptions { addr, allow_remote: false }
    }
}

/// The server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without [`ServeOptions::allow_remote`].
    #[error("{addr} is not a loopback address: the map has no authentication; pass --allow-remote to bind it anyway")]
    NotLoopback {
        /// The address.
        addr: SocketAddr,
    },
    /// The address cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime or the server's thread failed.
    #[error("the map server failed")]
    Runtime(#[source] std::io::Error),
    /// The server's thread panicked.
    #[error("the map server's thread panicked")]
    Panicked,
}

/// A running server. Dropping it stops it (and waits for its thread).
#[derive(Debug)]
pub struct Serving {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Serving {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it: no new requests, those in flight finish; waits for its thread.
    ///
    /// # Errors
    /// [`ServeError`] if the server had failed.
    pub fn stop(mut self) -> Result<(), ServeError> {
        self.stop_and_join()
    }

    /// Waits until the shutdown future given to [`serve`] completes and the server stops.
    ///
    /// # Errors
    /// [`ServeError`] if the server failed.
    pub fn wait(mut self) -> Result<(), ServeError> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| ServeError::Panicked)?,
            None => Ok(()),
        }
    }

    fn stop_and_join(&mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(()); // the server may have stopped already
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| ServeError::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            tracing::warn!(error = %e, "map server stopped with an error");
        }
    }
}

/// Serves the map of `source` until `shutdown` completes (or [`Serving::stop`]).
///
/// `/metrics` renders `metrics`, the handle of the process's Prometheus recorder (the server's
/// own counters go to whatever recorder is installed).
///
/// # Errors
/// [`ServeError::NotLoopback`], [`ServeError::Bind`], or [`ServeError::Runtime`] when the
/// runtime or thread cannot be created.
pub fn serve(
    options: ServeOptions,
    config: ServeConfig,
    source: Arc<dyn EdgeSource>,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Serving, ServeError> {
    let requested = options.addr;
    if !requested.ip().is_loopback() && !options.allow_remote {
        return Err(ServeError::NotLoopback { addr: requested });
    }
    let listener = TcpListener::bind(requested).map_err(|source| ServeError::Bind { addr: requested, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr: requested, source })?;
    listener.set_nonblocking(true).map_err(|source| ServeError::Bind { addr, source })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(config.max_concurrent() + 2)
        .thread_name("flowmap-serve")
        .build()
        .map_err(ServeError::Runtime)?;
    let state = Arc::new(AppState { permits: Semaphore::new(config.max_concurrent()), source, config, metrics });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("flowmap-serve".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).map_err(ServeError::Runtime)?;
                tracing::info!(%addr, "map server listening");
                let stopped = async move {
                    tokio::select! {
                        _ = stop_rx => {}
                        _ = shutdown => {}
                    }
                };
                axum::serve(listener, router(state)).with_graceful_shutdown(stopped).await.map_err(ServeError::Runtime)
            })
        })
        .map_err(ServeError::Runtime)?;
    Ok(Serving { addr, stop: Some(stop_tx), thread: Some(thread) })
}
