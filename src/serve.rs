//! The web page and its JSON API, served by axum: draw a digit and watch the network read it.
//!
//! ```text
//! GET  /              the page (everything inline: no external assets)
//! GET  /train         the page that trains LeNet-5 in the browser (see [`crate::web`]), with its worker
//!                     (/train-worker.js), the engine (/lenet5.wasm) and the data sets found under the data root
//!                     (/data/datasets.json, /data/NAME/FILE.gz)
//! GET  /healthz       "ok"
//! GET  /api/model     architecture summary, class names, checkpoint metadata
//! GET  /api/sample    a random test-set image (or ?index=N) with its label
//! POST /api/predict   a PNG/JPEG/BMP/GIF body (preprocessed like MNIST), or JSON {"pixels": [784 floats]}
//!                     (or a bare array); ?features=1 adds the 28x28 input and the conv1/conv2 feature maps
//! ```
//! Bad requests get a 4xx status and `{"error": "..."}`; no input can make a handler panic.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::deploy::Engine;
use crate::preprocess::{Digit, Preprocess, preprocess_of};
use crate::web::Offered;
use lenet5_core::data::Split;
use lenet5_core::digit::GreyImage;
use lenet5_core::nn::model::{CONV1, CONV2, IMAGE_LEN};
use lenet5_core::rng::Rng;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 2 << 20;
/// The largest upload decoded: 4096 pixels on a side, 64 MB of decoded pixels (a 2 MB PNG can hold far more).
const MAX_UPLOAD_SIDE: u32 = 4096;
const MAX_UPLOAD_BYTES: u64 = 64 << 20;
/// Pictures decoded at the same time; more requests wait their turn.
const MAX_DECODES: usize = 2;
/// What the pages may load and do: their own scripts, styles and WebAssembly, nothing from elsewhere, and no
/// framing by another site.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const PAGE: &str = include_str!("../assets/web/index.html");

/// The model that ships with lenet5 (`models/lenet5-mnist.safetensors`: the 50-epoch recipe on MNIST), which
/// `lenet5 serve` falls back on before any model has been trained, so that its pages work at once.
pub const BUNDLED_MODEL: &[u8] = include_bytes!("../models/lenet5-mnist.safetensors");
/// How [`BUNDLED_MODEL`] is named in messages and in `/api/model`.
pub const BUNDLED_MODEL_NAME: &str = "the bundled MNIST model (models/lenet5-mnist.safetensors)";

/// What the handlers share.
pub struct AppState {
    engine: Mutex<Engine>,
    /// How uploaded pictures are prepared: as the network's training images were.
    preprocess: Preprocess,
    /// Pictures decoded at once, at most.
    decodes: tokio::sync::Semaphore,
    test: Option<Split>,
    weights: String,
    samples: AtomicU64,
    /// The training page's data sets.
    datasets: Vec<Offered>,
}

impl AppState {
    /// `test` feeds `/api/sample`; without it that endpoint answers 404.
    /// `engine`: float weights (a [`Predictor`](lenet5_core::infer::Predictor)) or an int8 network.
    pub fn new(engine: impl Into<Engine>, test: Option<Split>, weights: impl Into<String>) -> Self {
        let engine = engine.into();
        AppState {
            preprocess: preprocess_of(engine.checkpoint()),
            decodes: tokio::sync::Semaphore::new(MAX_DECODES),
            engine: Mutex::new(engine),
            test,
            weights: weights.into(),
            samples: AtomicU64::new(0),
            datasets: Vec::new(),
        }
    }

    /// The data sets the training page offers (see [`crate::web::available`]).
    pub fn with_datasets(mut self, datasets: Vec<Offered>) -> Self {
        self.datasets = datasets;
        self
    }
}

/// An error response: a status and `{"error": message}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The application's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/model", get(model_info))
        .route("/api/sample", get(sample))
        .route("/api/predict", post(predict))
        .merge(training_page())
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such page".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "this method is not allowed here".into())
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(request_deadline))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// The training page, its files and its data sets, served cross-origin isolated so that its workers may share
/// memory (see [`crate::web`]).
fn training_page() -> Router<Arc<AppState>> {
    let mut page = Router::new()
        .route("/train", get(|| async { Html(crate::web::PAGE) }))
        .route("/data/datasets.json", get(datasets))
        .route("/data/{name}/{file}", get(data_file));
    for asset in &crate::web::ASSETS {
        let file = ([(header::CONTENT_TYPE, asset.content_type)], asset.bytes);
        page = page.route(&format!("/{}", asset.name), get(move || async move { file }));
    }
    page.layer(axum::middleware::map_response(isolated))
}

async fn isolated(mut response: Response) -> Response {
    for (name, value) in crate::web::ISOLATION_HEADERS {
        response.headers_mut().insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Headers every response carries: no guessing of content types, and the pages' content policy.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// How long a client may take to send a request's headers, and how long a connection may sit idle between
/// requests, before it is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take from its headers to its response (a body sent a byte at a time ends here).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the requests in flight may take to finish once the server is asked to stop; then their connections
/// are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Connections served at once, at most; more are closed as they arrive, until some finish.
pub const MAX_CONNECTIONS: usize = 4096;
/// How long a client may leave a response unread (no byte of it taken) before its connection is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// What a connection buffers, at most, of a response its client has not taken yet (and of a request's
/// headers): with [`DATA_CHUNK`], what a client that stops reading costs.
const WRITE_BUFFER: usize = 64 << 10;

/// Serves until `shutdown` completes, then gives the requests in flight [`SHUTDOWN_GRACE`] to finish. Each
/// connection must send its headers within [`HEADER_TIMEOUT`], so clients that never finish a request (or sit
/// idle) cannot hold connections and file descriptors for ever.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, or a connection reset before it was taken: wait a moment and go on.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else { continue };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(WRITE_BUFFER)
            .serve_connection(hyper_util::rt::TokioIo::new(WriteDeadline::new(stream, WRITE_TIMEOUT)), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    // No new connections; those open finish their requests, or are dropped when the grace period ends.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    Ok(())
}

/// A connection whose writes fail once they have waited `limit` for the client to take a byte: a client that
/// stops reading a response is dropped, rather than holding its buffers and its file for ever.
struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    /// Set when a write first waits, cleared when one goes through.
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, limit: Duration) -> Self {
        WriteDeadline { inner, limit, deadline: None }
    }

    /// What a write that returned `poll` means: progress clears the deadline, waiting starts it or, past it,
    /// is an error.
    fn watch<R>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        poll: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        if poll.is_ready() {
            self.deadline = None;
            return poll;
        }
        let limit = self.limit;
        let deadline = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client stopped reading")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

/// Ends a request that takes longer than [`REQUEST_TIMEOUT`] with 408.
async fn request_deadline(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError(StatusCode::REQUEST_TIMEOUT, "the request took too long".into()).into_response(),
    }
}

async fn model_info(State(s): State<Arc<AppState>>) -> Json<Value> {
    let engine = s.engine.lock().unwrap_or_else(|e| e.into_inner());
    let ck = engine.checkpoint();
    Json(json!({
        "int8": engine.is_int8(),
        "architecture": lenet5_core::summary::layers(1, ck.head, ck.classes()),
        "parameters": ck.params.len(),
        "head": ck.head.name(),
        "class_names": ck.class_names,
        "metadata": public_metadata(&ck.metadata),
        "weights": s.weights,
    }))
}

/// A checkpoint's metadata as the API shows it: the entries that hold a path on the server (the data set's
/// directory, the file the weights came from) by their last component only.
fn public_metadata(metadata: &std::collections::HashMap<String, String>) -> std::collections::BTreeMap<String, String> {
    metadata
        .iter()
        .map(|(k, v)| {
            let v = match k.as_str() {
                "dataset" | "source" => Path::new(v).file_name().map_or(v.clone(), |n| n.to_string_lossy().into()),
                _ => v.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// The training page's data sets.
async fn datasets(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(crate::web::datasets_json(&s.datasets, true))
}

/// Bytes of a data file read at a time: what a connection holds of it at once, with hyper's write buffer
/// ([`WRITE_BUFFER`]).
const DATA_CHUNK: usize = 16 << 10;

/// One of the four files of a data set, as the training page fetches them: streamed from disk a chunk at a
/// time, so that a client that reads slowly (or not at all) holds a few chunks, never the file.
async fn data_file(
    State(s): State<Arc<AppState>>,
    UrlPath((name, file)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let not_found = || {
        let wanted = format!("{name}/{file}");
        let shown = crate::text::printable(&wanted);
        ApiError(StatusCode::NOT_FOUND, format!("data set file {shown} is not on this server"))
    };
    let path = crate::web::data_file(&s.datasets, &name, &file).ok_or_else(not_found)?;
    let cannot = |e: std::io::Error| {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read {name}/{file} on the server: {e}"))
    };
    let file = tokio::fs::File::open(path).await.map_err(cannot)?;
    let len = file.metadata().await.map_err(cannot)?.len();
    let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; DATA_CHUNK];
        let n = file.read(&mut chunk).await?;
        chunk.truncate(n);
        Ok::<_, std::io::Error>((n > 0).then(|| (Bytes::from(chunk), file)))
    });
    let headers =
        [(header::CONTENT_TYPE, "application/octet-stream".to_string()), (header::CONTENT_LENGTH, len.to_string())];
    Ok((headers, axum::body::Body::from_stream(chunks)).into_response())
}

#[derive(Deserialize)]
struct SampleQuery {
    index: Option<usize>,
}

async fn sample(State(s): State<Arc<AppState>>, query: Result<Query<SampleQuery>, QueryRejection>) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let test = s.test.as_ref().filter(|t| !t.is_empty()).ok_or_else(|| {
        ApiError(StatusCode::NOT_FOUND, "no test images were found when the server started (see --data)".into())
    })?;
    let index = match q.index {
        Some(i) if i < test.len() => i,
        Some(i) => {
            return Err(ApiError(StatusCode::BAD_REQUEST, format!("index {i} is out of range 0..{}", test.len())));
        }
        None => {
            let n = s.samples.fetch_add(1, Ordering::Relaxed);
            Rng::derived(n, 3, 0).pick(test.len()).expect("a test set with images")
        }
    };
    let pixels: Vec<f32> = test.image(index).iter().map(|&p| p as f32 / 255.0).collect();
    let engine = s.engine.lock().unwrap_or_else(|e| e.into_inner());
    Ok(Json(json!({ "index": index, "label": engine.class_name(test.labels[index] as usize), "pixels": pixels })))
}

#[derive(Deserialize)]
struct PredictQuery {
    features: Option<u8>,
}

/// Reads 784 finite numbers from `{"pixels": [...]}` or a bare array.
fn pixels_from_json(body: &[u8]) -> Result<Digit, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let arr = match &v {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("pixels") {
            Some(Value::Array(a)) => a,
            _ => return Err(bad("expected {\"pixels\": [784 numbers]}".into())),
        },
        _ => return Err(bad("expected {\"pixels\": [784 numbers]}".into())),
    };
    let unprocessable = |m: String| ApiError(StatusCode::UNPROCESSABLE_ENTITY, m);
    if arr.len() != IMAGE_LEN {
        return Err(unprocessable(format!("expected {IMAGE_LEN} pixels (28x28), got {}", arr.len())));
    }
    let mut digit = [0.0f32; IMAGE_LEN];
    for (i, (d, v)) in digit.iter_mut().zip(arr).enumerate() {
        let x = v.as_f64().ok_or_else(|| unprocessable(format!("pixel {i} is not a number")))? as f32;
        if !(0.0..=1.0).contains(&x) {
            return Err(unprocessable(format!("pixel {i} is {x}; pixels are grey levels from 0 to 1")));
        }
        *d = x;
    }
    if digit.iter().all(|&v| v == digit[0]) {
        return Err(unprocessable("the image is blank: every pixel is the same".into()));
    }
    Ok(digit)
}

async fn predict(
    State(s): State<Arc<AppState>>,
    query: Result<Query<PredictQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let body = body.map_err(|e| {
        let status = e.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("request body is larger than {MAX_BODY} bytes")
        } else {
            format!("cannot read request body: {e}")
        };
        ApiError(status, msg)
    })?;
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ctype.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let digit = match mime.as_str() {
        "application/json" => pixels_from_json(&body)?,
        "image/png"
        | "image/jpeg"
        | "image/bmp"
        | "image/gif"
        | "image/x-portable-graymap"
        | "application/octet-stream" => {
            // Decoding takes up to seconds and hundreds of MB for the largest pictures: on the blocking
            // threads, a few at a time, so that the server keeps answering meanwhile.
            let _permit = s
                .decodes
                .acquire()
                .await
                .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into()))?;
            let preprocess = s.preprocess;
            tokio::task::spawn_blocking(move || -> Result<Digit, ApiError> {
                let img = GreyImage::decode(&body, MAX_UPLOAD_SIDE, MAX_UPLOAD_BYTES)
                    .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
                preprocess.input(&img).map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
            })
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("decoding failed: {e}")))??
        }
        _ => {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content type `{ctype}` is not accepted: send image/png, image/jpeg or application/json"),
            ));
        }
    };
    let mut engine = s.engine.lock().unwrap_or_else(|e| e.into_inner());
    let features = q.features.unwrap_or(0) != 0;
    let (pred, acts) = if features { engine.predict_with_activations(&digit) } else { (engine.predict(&digit), None) };
    let mut out = json!({
        "class": engine.class_name(pred.class),
        "index": pred.class,
        "probabilities": pred.probabilities,
        "classes": engine.checkpoint().class_names,
    });
    if features {
        out["input"] = json!(digit.to_vec());
    }
    // The float network's feature maps; an int8 network's engine keeps none, and the answer has no `features`.
    if let Some(acts) = acts {
        let maps = |v: &[f32], plane: usize| v.chunks(plane).map(|c| c.to_vec()).collect::<Vec<_>>();
        out["features"] = json!({
            "conv1": maps(&acts.conv1, CONV1.out_size() * CONV1.out_size()),
            "conv2": maps(&acts.conv2, CONV2.out_size() * CONV2.out_size()),
        });
    }
    Ok(Json(out))
}
