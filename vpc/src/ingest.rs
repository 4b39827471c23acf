//! The ingestion loop: queue mode ([`run_queue`]) and backfill mode ([`run_backfill`]).
//!
//! Both block the calling thread and run their own tokio runtime (2 worker threads): the lead
//! calls them from a thread of its own. Inside, one *controller* task owns the
//! [`crate::tracker::Tracker`] and the [`Processed`] state; `receivers` *receiver* tasks long-poll
//! SQS, never holding more messages than `max_in_flight` (a semaphore: a permit per message, given
//! back when the message is deleted or released); the *processing thread* (`process.rs`)
//! reads files and calls the sink.
//!
//! The controller's order of work after the sink's watermark moves is the at-least-once
//! guarantee: (1) the mouthfuls below it are delivered; (2) their objects are recorded in the
//! state file, synced; (3) only then are the messages deleted. A crash anywhere repeats work,
//! never skips it. Messages still in flight have their visibility extended before it runs out;
//! a file whose read failed in a way a retry may cure has its messages made visible again at
//! once (visibility 0) and forgotten, so SQS redelivers them (and its redrive policy, if any,
//! dead-letters a message that keeps failing).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry};
use futures::StreamExt;
use object_store::path::Path;
use tokio::sync::{mpsc, Semaphore};

use crate::backfill::BackfillRange;
use crate::config::{QueueSettings, Settings};
use crate::event::parse_notification;
use crate::process::{Job, Live, Processor, Report};
use crate::progress::Progress;
use crate::sink::{MouthfulId, Sink, SinkError};
use crate::state::{Processed, StateError};
use crate::store::{sqs_client, Stores};
use crate::summary::Summary;
use crate::tracker::{FileRef, Item, Limits, MessageRef, Tracker};

/// A stop request, shared with the ingester: after [`Stop::request`], it receives no more
/// messages (or lists no more files), finishes and delivers the mouthfuls it has, deletes what
/// was delivered, and returns.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// A stop not yet requested.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Requests the stop.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// True once requested.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Runtime knobs of one run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Queue mode: stop once no message arrived for this long and nothing is in flight.
    pub until_idle: Option<Duration>,
    /// After a stop, how long to wait for the sink to deliver what it has before returning
    /// (what is not delivered stays in the queue, and comes back).
    pub drain_timeout: Duration,
    /// Show progress on the terminal (hidden anyway when stderr is not one).
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { until_idle: None, drain_timeout: Duration::from_secs(60), progress: false }
    }
}

/// Why ingestion stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The state file failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The settings lack what this mode needs.
    #[error("{0}")]
    Settings(String),
    /// The runtime or a thread could not be started, or a part of the ingester died.
    #[error("ingester: {0}")]
    Internal(String),
    /// Listing the backfill prefix failed.
    #[error("listing s3://{bucket}/{prefix}: {source}")]
    List {
        /// Bucket.
        bucket: String,
        /// Prefix.
        prefix: String,
        /// Why.
        #[source]
        source: object_store::Error,
    },
}

/// Reads the queue until stopped (or idle, per `options`), handing mouthfuls to `sink`.
/// Returns the summary and the sink.
///
/// # Errors
/// [`IngestError`] when the sink or the state file fails (nothing undelivered is deleted), or the
/// settings have no `[queue]`.
pub fn run_queue<S: Sink>(
    settings: &Settings,
    sink: S,
    stop: Stop,
    options: RunOptions,
) -> Result<(Summary, S), IngestError> {
    let queue = settings.queue.clone().ok_or_else(|| IngestError::Settings("the settings have no [queue]".into()))?;
    runtime()?.block_on(async move {
        let client = sqs_client(&queue).await;
        let mut c = Controller::start(settings, sink, &options, Some(&queue))?;
        let permits = Arc::new(Semaphore::new(queue.max_in_flight as usize));
        let (msg_tx, mut msg_rx) = mpsc::channel(64);
        let receiving = Arc::new(AtomicBool::new(true));
        let receivers: Vec<_> = (0..queue.receivers)
            .map(|_| {
                tokio::spawn(receive_loop(
                    client.clone(),
                    queue.clone(),
                    permits.clone(),
                    msg_tx.clone(),
                    receiving.clone(),
                    c.receive_errors.clone(),
                ))
            })
            .collect();
        drop(msg_tx);
        let mut last_message = Instant::now();
        let mut receiver_done = false;
        let mut tick = tokio::time::interval(settings.poll);
        loop {
            tokio::select! {
                got = msg_rx.recv(), if !receiver_done => match got {
                    Some(batch) => {
                        last_message = Instant::now();
                        for m in batch {
                            c.message(m, &permits);
                        }
                    }
                    None => receiver_done = true,
                },
                Some(report) = c.reports.recv() => c.report(report, Some((&client, &queue.url, &permits))).await?,
                _ = tick.tick() => {}
            }
            let idle = options.until_idle.is_some_and(|d| last_message.elapsed() >= d && c.tracker.is_idle());
            if (stop.requested() || idle) && c.stopping.is_none() {
                c.stopping = Some(Instant::now());
                receiving.store(false, Ordering::SeqCst);
            }
            c.step(Some((&client, &queue.url, &permits))).await?;
            if c.stopping.is_some() && receiver_done && c.finished(&options) {
                break;
            }
        }
        for r in receivers {
            let _ = r.await;
        }
        c.finish()
    })
}

/// Reads every file under `range.prefix` whose time is in the range (see
/// [`crate::backfill`]), skipping objects already processed, and returns when all are
/// delivered (or on a stop).
///
/// # Errors
/// As [`run_queue`], and [`IngestError::List`] when the listing fails.
pub fn run_backfill<S: Sink>(
    settings: &Settings,
    range: BackfillRange,
    sink: S,
    stop: Stop,
    options: RunOptions,
) -> Result<(Summary, S), IngestError> {
    runtime()?.block_on(async move {
        let mut c = Controller::start(settings, sink, &options, None)?;
        let store = c
            .stores
            .bucket(&range.bucket)
            .map_err(|e| IngestError::Settings(e.to_string()))?;
        let prefix = Path::parse(&range.prefix).map_err(|e| IngestError::Settings(e.to_string()))?;
        let mut listing = store.list(if range.prefix.is_empty() { None } else { Some(&prefix) });
        let mut listed = false;
        let mut total = 0u64;
        let mut tick = tokio::time::interval(settings.poll);
        let ahead = settings.max_files.saturating_mul(4).max(16);
        loop {
            let want_more = !listed && c.stopping.is_none() && c.tracker.pending() < ahead;
            tokio::select! {
                next = listing.next(), if want_more => match next {
                    None => listed = true,
                    Some(Err(source)) => {
                        return Err(IngestError::List { bucket: range.bucket.clone(), prefix: range.prefix.clone(), source })
                    }
                    Some(Ok(meta)) => {
                        let key = meta.location.to_string();
                        if range.contains(&key, meta.last_modified.into()) {
                            let etag = meta.e_tag.as_deref().map(|e| e.trim_matches('"').to_string());
                            let id = crate::sink::ObjectId { bucket: range.bucket.clone(), key: key.clone(), etag: etag.clone().unwrap_or_default() };
                            if etag.is_some() && c.processed.contains(&id) {
                                c.summary.skipped_processed += 1;
                            } else {
                                total += meta.size;
                                c.progress.set_total(total);
                                c.tracker.add_file(FileRef { bucket: range.bucket.clone(), key, size: meta.size, etag }, Instant::now());
                            }
                        }
                    }
                },
                Some(report) = c.reports.recv() => c.report(report, None).await?,
                _ = tick.tick() => {}
            }
            if stop.requested() && c.stopping.is_none() {
                c.stopping = Some(Instant::now());
            }
            if listed && c.stopping.is_none() {
                c.stopping = Some(Instant::now());
            }
            c.step(None).await?;
            if c.stopping.is_some() && c.finished(&options) {
                break;
            }
        }
        c.finish()
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, IngestError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flowmap-vpc")
        .enable_all()
        .build()
        .map_err(|e| IngestError::Internal(e.to_string()))
}

type QueueCtx<'a> = Option<(&'a aws_sdk_sqs::Client, &'a String, &'a Arc<Semaphore>)>;

struct Controller<S> {
    tracker: Tracker,
    processed: Processed,
    stores: Arc<Stores>,
    summary: Summary,
    progress: Progress,
    reports: mpsc::UnboundedReceiver<Report>,
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<Result<S, SinkError>>>,
    /// A mouthful taken from the tracker, waiting for the processing thread.
    next: Option<crate::tracker::MouthfulPlan>,
    sealed: MouthfulId,
    started: Instant,
    stopping: Option<Instant>,
    last_extension: Instant,
    last_maintenance: Instant,
    live: Arc<Live>,
    /// Failed receive calls (counted by the receiver task).
    receive_errors: Arc<AtomicU64>,
}

impl<S: Sink> Controller<S> {
    fn start(
        settings: &Settings,
        sink: S,
        options: &RunOptions,
        queue: Option<&QueueSettings>,
    ) -> Result<Self, IngestError> {
        let processed = Processed::open(&settings.state_path, settings.state_retention, SystemTime::now())?;
        if processed.torn_lines > 0 {
            tracing::warn!(lines = processed.torn_lines, path = %settings.state_path.display(), "dropped torn state lines");
        }
        let stores = Arc::new(Stores::new(settings.store.clone()));
        let (report_tx, reports) = mpsc::unbounded_channel();
        // One mouthful queued beside the one being processed.
        let (jobs, job_rx) = std::sync::mpsc::sync_channel(1);
        let live = Arc::new(Live::default());
        let processor = Processor::new(
            sink,
            stores.clone(),
            tokio::runtime::Handle::current(),
            settings.batch_records,
            settings.poll,
            report_tx,
            live.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("flowmap-vpc-process".into())
            .spawn(move || processor.run(job_rx))
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        let (visibility, extend_before) = queue
            .map_or((Duration::from_secs(3600), Duration::from_secs(1)), |q| (q.visibility_timeout, q.extend_before));
        let limits = Limits {
            max_bytes: settings.max_bytes,
            max_files: settings.max_files,
            max_wait: settings.max_wait,
            visibility,
            extend_before,
        };
        Ok(Controller {
            tracker: Tracker::new(limits),
            processed,
            stores,
            summary: Summary::default(),
            progress: Progress::new(options.progress, if queue.is_none() { Some(0) } else { None }),
            reports,
            jobs: Some(jobs),
            thread: Some(thread),
            next: None,
            sealed: 0,
            started: Instant::now(),
            stopping: None,
            last_extension: Instant::now(),
            last_maintenance: Instant::now(),
            live,
            receive_errors: Arc::new(AtomicU64::new(0)),
        })
    }

    /// One queue message.
    fn message(&mut self, m: aws_sdk_sqs::types::Message, permits: &Semaphore) {
        self.summary.messages_received += 1;
        let (Some(id), Some(receipt)) = (m.message_id, m.receipt_handle) else {
            // Without an id and a receipt it can be neither tracked nor deleted.
            self.summary.queue_errors += 1;
            permits.add_permits(1);
            return;
        };
        let body = m.body.unwrap_or_default();
        let items = match parse_notification(&body) {
            Ok(n) if n.test_event => {
                self.summary.test_events += 1;
                Vec::new()
            }
            Ok(n) => {
                for (name, count) in n.ignored {
                    *self.summary.ignored_events.entry(name).or_default() += count;
                }
                let mut items = Vec::new();
                for o in n.objects {
                    let done = o.etag.as_ref().is_some_and(|etag| {
                        self.processed.contains(&crate::sink::ObjectId {
                            bucket: o.bucket.clone(),
                            key: o.key.clone(),
                            etag: etag.clone(),
                        })
                    });
                    if done {
                        self.summary.skipped_processed += 1;
                    } else {
                        items.push(Item::File(FileRef { bucket: o.bucket, key: o.key, size: o.size, etag: o.etag }));
                    }
                }
                items
            }
            Err(e) => {
                self.summary.bad_messages += 1;
                vec![Item::BadMessage {
                    message_id: id.clone(),
                    reason: e.to_string(),
                    body: crate::parse::dead_text(body.as_bytes()),
                }]
            }
        };
        if !self.tracker.receive(MessageRef { id, receipt }, items, Instant::now()) {
            // Already in flight: it holds one permit, not two.
            self.summary.messages_redelivered += 1;
            permits.add_permits(1);
        }
        self.summary.max_in_flight = self.summary.max_in_flight.max(self.tracker.in_flight() as u64);
    }

    async fn report(&mut self, report: Report, queue: QueueCtx<'_>) -> Result<(), IngestError> {
        match report {
            Report::File { outcome, unknown, dead_letters } => {
                self.summary.file(outcome.size, &outcome.status, &outcome.stats, &unknown);
                self.summary.dead_letters += dead_letters;
            }
            Report::DeadLetters(n) => self.summary.dead_letters += n,
            Report::Failed { mouthful, file, reason } => {
                tracing::warn!(bucket = %file.bucket, key = %file.key, %reason, "reading a file failed; its messages go back to the queue");
                self.summary.files_failed += 1;
                let released = self.tracker.failed(mouthful, &file);
                if let Some((client, url, permits)) = queue {
                    self.release(client, url, permits, released).await;
                }
            }
            Report::Sealed(m) => self.sealed = m + 1,
            Report::Watermark(w) => {
                let released = self.tracker.delivered(w);
                self.summary.mouthfuls_delivered = w;
                // Recorded (and synced) before any deletion: see the module documentation.
                self.processed.record(&released.files, SystemTime::now())?;
                if let Some((client, url, permits)) = queue {
                    self.delete(client, url, permits, released.deletable).await;
                }
            }
        }
        Ok(())
    }

    /// Dispatches due mouthfuls, deletes what became deletable without a watermark move (test
    /// events, skipped objects), extends visibility, updates the progress line.
    async fn step(&mut self, queue: QueueCtx<'_>) -> Result<(), IngestError> {
        let flush = self.stopping.is_some();
        loop {
            if self.next.is_none() {
                self.next = self.tracker.next_mouthful(Instant::now(), flush);
                if self.next.is_some() {
                    self.summary.mouthfuls += 1;
                }
            }
            let Some(plan) = self.next.take() else { break };
            let Some(jobs) = &self.jobs else { break };
            match jobs.try_send(Job::Mouthful(plan)) {
                Ok(()) => {}
                Err(std::sync::mpsc::TrySendError::Full(Job::Mouthful(plan))) => {
                    self.next = Some(plan);
                    break;
                }
                Err(_) => return Err(self.thread_error()),
            }
        }
        if let Some((client, url, permits)) = queue {
            let released = self.tracker.delivered(0);
            self.delete(client, url, permits, released.deletable).await;
            // Checked several times within `extend_before`, so a busy loop still extends in time.
            let every = (self.tracker.limits().extend_before / 4).min(Duration::from_secs(1));
            if self.last_extension.elapsed() >= every {
                self.last_extension = Instant::now();
                let due = self.tracker.due_extensions(Instant::now());
                self.extend(client, url, due).await;
            }
        }
        if self.last_maintenance.elapsed() >= Duration::from_secs(60) {
            self.last_maintenance = Instant::now();
            self.processed.maintain(SystemTime::now())?;
        }
        self.summary.elapsed_s = self.started.elapsed().as_secs_f64();
        self.summary.queue_errors += self.receive_errors.swap(0, Ordering::Relaxed);
        self.progress.update(
            &self.summary,
            self.live.bytes.load(Ordering::Relaxed),
            self.live.records.load(Ordering::Relaxed),
            self.tracker.in_flight(),
        );
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            return Err(self.thread_error());
        }
        Ok(())
    }

    /// The processing thread ended early: its error.
    fn thread_error(&mut self) -> IngestError {
        self.jobs = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => IngestError::Sink(e),
            Some(Err(_)) => IngestError::Internal("the processing thread panicked".into()),
            _ => IngestError::Internal("the processing thread stopped".into()),
        }
    }

    /// Stopping: done when everything is delivered and deleted, or the drain time is up.
    fn finished(&self, options: &RunOptions) -> bool {
        let drained = self.next.is_none() && self.tracker.is_idle();
        drained || self.stopping.is_some_and(|t| t.elapsed() >= options.drain_timeout)
    }

    fn finish(mut self) -> Result<(Summary, S), IngestError> {
        if let Some(jobs) = self.jobs.take() {
            let _ = jobs.send(Job::Stop);
        }
        let sink = match self.thread.take().map(|t| t.join()) {
            Some(Ok(Ok(sink))) => sink,
            Some(Ok(Err(e))) => return Err(IngestError::Sink(e)),
            _ => return Err(IngestError::Internal("the processing thread panicked".into())),
        };
        self.progress.finish();
        self.summary.elapsed_s = self.started.elapsed().as_secs_f64();
        if !self.tracker.is_idle() {
            tracing::warn!(
                in_flight = self.tracker.in_flight(),
                undelivered = self.tracker.open_mouthfuls(),
                "stopped before everything was delivered; undeleted messages will come back"
            );
        }
        Ok((self.summary, sink))
    }

    async fn delete(&mut self, client: &aws_sdk_sqs::Client, url: &str, permits: &Semaphore, msgs: Vec<MessageRef>) {
        for chunk in msgs.chunks(10) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(&m.receipt).build().ok()
                })
                .collect();
            match client.delete_message_batch().queue_url(url).set_entries(Some(entries)).send().await {
                Ok(out) => {
                    self.summary.messages_deleted += out.successful().len() as u64;
                    for f in out.failed() {
                        tracing::warn!(code = %f.code(), message = ?f.message(), "deleting a message failed; it will come back");
                        self.summary.queue_errors += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "deleting messages failed; they will come back");
                    self.summary.queue_errors += 1;
                }
            }
            // Deleted or not, these are no longer ours: a failed deletion comes back as a new
            // receipt, and its objects are then skipped (recorded) or read again.
            for m in chunk {
                self.tracker.forget(&m.id);
                permits.add_permits(1);
            }
        }
    }

    /// Makes messages visible again at once, and forgets them.
    async fn release(&mut self, client: &aws_sdk_sqs::Client, url: &str, permits: &Semaphore, msgs: Vec<MessageRef>) {
        self.summary.messages_released += msgs.len() as u64;
        self.visibility(client, url, &msgs, 0).await;
        for m in &msgs {
            self.tracker.forget(&m.id);
            permits.add_permits(1);
        }
    }

    async fn extend(&mut self, client: &aws_sdk_sqs::Client, url: &str, msgs: Vec<MessageRef>) {
        let secs = i32::try_from(self.tracker_visibility().as_secs()).unwrap_or(i32::MAX);
        self.summary.visibility_extensions += msgs.len() as u64;
        self.visibility(client, url, &msgs, secs).await;
    }

    fn tracker_visibility(&self) -> Duration {
        self.tracker.limits().visibility
    }

    async fn visibility(&mut self, client: &aws_sdk_sqs::Client, url: &str, msgs: &[MessageRef], secs: i32) {
        for chunk in msgs.chunks(10) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&m.receipt)
                        .visibility_timeout(secs)
                        .build()
                        .ok()
                })
                .collect();
            match client.change_message_visibility_batch().queue_url(url).set_entries(Some(entries)).send().await {
                Ok(out) => self.summary.queue_errors += out.failed().len() as u64,
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "changing visibility failed");
                    self.summary.queue_errors += 1;
                }
            }
        }
    }
}

/// Long-polls the queue while `receiving`, never holding more unreturned permits than the cap.
async fn receive_loop(
    client: aws_sdk_sqs::Client,
    queue: QueueSettings,
    permits: Arc<Semaphore>,
    out: mpsc::Sender<Vec<aws_sdk_sqs::types::Message>>,
    receiving: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
) {
    let wait = i32::try_from(queue.receive_wait.as_secs()).unwrap_or(20);
    let visibility = i32::try_from(queue.visibility_timeout.as_secs()).unwrap_or(i32::MAX);
    while receiving.load(Ordering::SeqCst) {
        // Wait for room for one message (checking the stop flag now and then), then take as
        // many as are free, up to SQS's 10 per call.
        let first = match tokio::time::timeout(Duration::from_millis(200), permits.acquire()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return,
            Err(_) => continue,
        };
        first.forget();
        let mut n = 1;
        while n < 10 {
            match permits.try_acquire() {
                Ok(p) => {
                    p.forget();
                    n += 1;
                }
                Err(_) => break,
            }
        }
        let got = client
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(n as i32)
            .wait_time_seconds(wait)
            .visibility_timeout(visibility)
            .send()
            .await;
        match got {
            Ok(resp) => {
                let msgs = resp.messages.unwrap_or_default();
                permits.add_permits(n - msgs.len().min(n));
                if !msgs.is_empty() && out.send(msgs).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "receiving from the queue failed; retrying in 1 s");
                errors.fetch_add(1, Ordering::Relaxed);
                permits.add_permits(n);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
