//! The HTTP routes: the page and its assets, the JSON API, CSV, `/metrics` and `/healthz`.
//!
//! Handlers read and validate their parameters on the runtime's thread (a bad request is a 400
//! with `{"error": "<parameter>: <why>"}`), then compute on a blocking thread, at most
//! `max_concurrent` at once, so a large aggregation never stalls other requests' I/O. Every
//! response is counted in `flowmap_serve_requests_total{route, status}` and timed in
//! `flowmap_serve_request_seconds{route}` (routes are the matched patterns: bounded labels).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::assets;
use crate::config::ServeConfig;
use crate::graph::{self, RangeOut};
use crate::query::{BadRequest, Context, Params};
use crate::source::{EdgeSource, Health, SourceError};
use crate::time::{format_time, now_ns};

/// What every handler shares.
pub(crate) struct AppState {
    pub source: Arc<dyn EdgeSource>,
    pub config: ServeConfig,
    pub metrics: PrometheusHandle,
    pub permits: Semaphore,
}

/// A response that is not a success.
#[derive(Debug)]
pub(crate) enum ApiError {
    Bad(BadRequest),
    NotFound(String),
    Source(SourceError),
    Internal(String),
}

impl From<BadRequest> for ApiError {
    fn from(e: BadRequest) -> Self {
        ApiError::Bad(e)
    }
}

impl From<SourceError> for ApiError {
    fn from(e: SourceError) -> Self {
        ApiError::Source(e)
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = match self {
            ApiError::Bad(e) => (StatusCode::BAD_REQUEST, e.0),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Source(e) => {
                let mut message = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    message.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                tracing::warn!(%message, "source unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, message)
            }
            ApiError::Internal(m) => {
                tracing::error!(message = %m, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, m)
            }
        };
        (status, Json(ErrorBody { error })).into_response()
    }
}

type Shared = State<Arc<AppState>>;

/// The server's routes.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/meta", get(meta))
        .route("/api/graph", get(graph_json))
        .route("/api/edges.csv", get(edges_csv))
        .route("/api/node", get(node_json))
        .route("/api/series", get(series_json))
        .route("/api/events", get(events_json))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .fallback(get(asset))
        .layer(middleware::from_fn(track))
        .with_state(state)
}

async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("asset", |p| p.as_str()).to_owned();
    let started = Instant::now();
    let mut response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("flowmap_serve_requests_total", "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("flowmap_serve_request_seconds", "route" => route).record(started.elapsed().as_secs_f64());
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'"),
    );
    response
}

/// Runs `work` on a blocking thread once a permit is free.
async fn compute<T: Send + 'static>(
    state: &Arc<AppState>,
    work: impl FnOnce(&AppState) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = state.permits.acquire().await.map_err(|_| ApiError::Internal("server is stopping".into()))?;
    let state = state.clone();
    tokio::task::spawn_blocking(move || work(&state))
        .await
        .map_err(|e| ApiError::Internal(format!("request computation failed: {e}")))?
}

/// The parameters, read against the data's extent (the default range ends there).
fn parse<T>(
    state: &AppState,
    query: Option<String>,
    read: impl FnOnce(&Context<'_>, &Params) -> Result<T, BadRequest>,
) -> Result<T, ApiError> {
    let params = Params::parse(query.as_deref())?;
    let data_end_ns =
        if params.from.is_some() && params.to.is_some() { None } else { state.source.extent()?.map(|r| r.to_ns()) };
    let ctx = Context { config: &state.config, now_ns: now_ns(), data_end_ns };
    Ok(read(&ctx, &params)?)
}

async fn graph_json(State(state): Shared, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let graph = compute(&state, move |s| {
        let q = parse(s, query, |c, p| c.graph("/api/graph", p))?;
        let rows = s.source.edges(q.view.range)?;
        let events = s.source.events(q.view.range)?;
        Ok(graph::graph(&q, &rows, &events))
    })
    .await?;
    Ok(Json(graph).into_response())
}

async fn edges_csv(State(state): Shared, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let (body, range) = compute(&state, move |s| {
        let q = parse(s, query, |c, p| c.graph("/api/edges.csv", p))?;
        let rows = s.source.edges(q.view.range)?;
        let events = s.source.events(q.view.range)?;
        let graph = graph::graph(&q, &rows, &events);
        let body = crate::export::edges_csv(&graph).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok((body, graph.range))
    })
    .await?;
    let RangeOut { from, to, .. } = range;
    let name = format!("attachment; filename=\"flowmap-edges-{}-{}.csv\"", from.replace(':', ""), to.replace(':', ""));
    let disposition = HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("attachment"));
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8")),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

async fn node_json(State(state): Shared, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let detail = compute(&state, move |s| {
        let q = parse(s, query, |c, p| c.node(p))?;
        let rows = s.source.edges(q.view.range)?;
        let events = s.source.events(q.view.range)?;
        graph::node(&q, &rows, &events)
            .ok_or_else(|| ApiError::NotFound(format!("id: no node {:?} in this view", q.id)))
    })
    .await?;
    Ok(Json(detail).into_response())
}

async fn series_json(State(state): Shared, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let series = compute(&state, move |s| {
        let q = parse(s, query, |c, p| c.series(p))?;
        let rows = s.source.edges(q.view.range)?;
        Ok(graph::series(&q, &rows))
    })
    .await?;
    Ok(Json(series).into_response())
}

async fn events_json(State(state): Shared, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let events = compute(&state, move |s| {
        let q = parse(s, query, |c, p| c.events(p))?;
        let events = s.source.events(q.range)?;
        Ok(graph::events(&q, &events))
    })
    .await?;
    Ok(Json(events).into_response())
}

/// `/api/meta`: what the page needs to start.
#[derive(Serialize)]
struct Meta {
    /// `memory` or `lake`.
    source: &'static str,
    /// The data's extent, if any.
    extent: Option<RangeOut>,
    /// The wall clock, RFC 3339.
    now: String,
    default_range_s: u64,
    default_group: String,
    default_limit: usize,
    max_limit: usize,
    /// The named groupings.
    groupings: Vec<String>,
    /// The deepest group level.
    max_level: u8,
    /// Facts about the data (a lake without an events table, ...).
    notes: Vec<String>,
    /// Bad rows the source counted, by reason (kept or skipped: see `/healthz`).
    bad_rows: std::collections::BTreeMap<String, u64>,
    version: &'static str,
}

async fn meta(State(state): Shared, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    if query.is_some_and(|q| !q.is_empty()) {
        return Err(BadRequest("query: /api/meta takes no parameters".into()).into());
    }
    let meta = compute(&state, |s| {
        let health = s.source.health();
        Ok(Meta {
            source: health.source,
            extent: s.source.extent()?.map(RangeOut::from),
            now: format_time(now_ns()),
            default_range_s: s.config.default_range().as_secs(),
            default_group: s.config.default_group().label(),
            default_limit: s.config.default_limit(),
            max_limit: s.config.max_limit(),
            groupings: s.config.grouping_names().map(str::to_owned).collect(),
            max_level: crate::group::MAX_LEVEL,
            notes: health.notes,
            bad_rows: health.bad_rows,
            version: env!("CARGO_PKG_VERSION"),
        })
    })
    .await?;
    Ok(Json(meta).into_response())
}

#[derive(Serialize)]
struct HealthBody {
    status: &'static str,
    #[serde(flatten)]
    health: Health,
}

async fn healthz(State(state): Shared) -> Response {
    let s = state.clone();
    match tokio::task::spawn_blocking(move || s.source.health()).await {
        Ok(health) => {
            let status = if health.ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            let body = HealthBody { status: if health.ok { "ok" } else { "unavailable" }, health };
            (status, Json(body)).into_response()
        }
        Err(e) => ApiError::Internal(format!("health check failed: {e}")).into_response(),
    }
}

async fn metrics_text(State(state): Shared) -> Response {
    let body = state.metrics.render();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], body)
        .into_response()
}

async fn asset(uri: Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") {
        return ApiError::NotFound(format!("no API route {path}")).into_response();
    }
    let path = if path == "/index.html" { "/" } else { path };
    match assets::find(path) {
        Some(a) => {
            let cache = if a.path == "/" { "no-cache" } else { "max-age=300" };
            (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static(a.content_type)),
                    (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
                ],
                a.body,
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
