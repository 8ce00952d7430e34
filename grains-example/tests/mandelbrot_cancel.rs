//! Cancelling a distributed Mandelbrot job stops the work across the cluster, on a
//! `TestCluster` of a master and three slaves, for each way a caller leaves a job:
//! `cancel()` on its stream, dropping [`run_job`]'s future (what the client's Ctrl-C
//! does) and the job's own deadline. Each job renders a few cheap bands (so progress
//! arrives), then keeps its six workers, spread over the slaves, on bands that take a
//! minute or more. After the cancel the caller hears of it at once, and within seconds
//! every worker is free (a tiny render on each answers), every band call in flight
//! ended in an error on the silo that ran it (counted by `/metrics`), no band
//! completed after the cancel, and the process stops burning CPU. Afterwards the same
//! job and workers render a small image with exactly the single-threaded pixels.

use std::future::IntoFuture;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use granary_client::Client;
use granary_example::mandelbrot::{render_rows, run_job, JobEvent, Render, RenderBand, View};
use granary_example::{MandelbrotJob, MandelbrotWorker};
use granary_proto::{CallError, GrainId};
use granary_runtime::Grain;
use granary_silo::testing::{eventually, TestCluster};
use granary_silo::ClusterSilo;
use tokio::time::Instant;

mod support;
use support::metrics::scrape;

const STABLE: Duration = Duration::from_secs(10);
/// How long the cheap bands may take to arrive (at most a few hundred iterations a pixel).
const PROGRESS: Duration = Duration::from_secs(60);
/// How soon the caller must see its own cancel.
const SEEN: Duration = Duration::from_secs(5);
/// How soon after the cancel every worker must be free again. A worker that ignored the
/// cancel would need most of a long band (a minute or more, see [`ROW`]) to get there.
const STOP: Duration = Duration::from_secs(15);
/// Deadline of the jobs cancelled by hand: never reached.
const JOB_TIMEOUT: Duration = Duration::from_secs(600);
/// The window over which the process's CPU use is measured.
const CPU_WINDOW: Duration = Duration::from_millis(500);
/// CPU use (in cores) above which the cluster counts as still rendering. Six render
/// threads use what the machine gives them (0.8-0.9 of a core on a shared 2-core box);
/// an idle cluster uses a few hundredths.
const IDLE_CORES: f64 = 0.25;
/// How long the worker counters must stay put once every turn has ended.
const QUIET: Duration = Duration::from_secs(1);

/// Worker grains per job (each renders one band at a time).
const WORKERS: u32 = 6;
/// Rows per band: a row is where a worker notices a stop, a band is a call.
const ROWS: u32 = 400;
/// Bands 0..7 lie above the set (`im` from -2.06 to -0.66): a few iterations a pixel.
const CHEAP_BANDS: u32 = 7;
/// Bands 7..13 lie inside the main cardioid: `max_iter` iterations every pixel.
const LONG_BANDS: u32 = 6;
/// Single-threaded time of one row of a long band, as calibrated: with six workers on
/// two cores a row takes about 150 ms of wall time, a band (400 rows) a minute.
const ROW: Duration = Duration::from_millis(50);

const WORKER: &str = MandelbrotWorker::TYPE_NAME;
const JOB: &str = MandelbrotJob::TYPE_NAME;

/// A thin column of the plane (8 pixels over `re` -0.302..-0.298) from `im` -2.06 (far
/// outside the set) down to 0.54 (inside the main cardioid, where no point escapes), so
/// the first [`CHEAP_BANDS`] bands are cheap and every later one costs `8 × ROWS ×
/// max_iter` iterations. Workers get bands in order, so once the cheap ones are in,
/// every worker is on a long one.
fn column(max_iter: u32) -> View {
    View {
        width: 8,
        height: (CHEAP_BANDS + LONG_BANDS) * ROWS,
        center_re: -0.3,
        center_im: -0.76,
        scale: 0.0005,
        max_iter,
    }
}

/// The job: the column in bands of [`ROWS`] rows on [`WORKERS`] workers; a band's call
/// never times out before the job does.
fn long_job(max_iter: u32) -> Render {
    Render {
        view: column(max_iter),
        bands: CHEAP_BANDS + LONG_BANDS,
        workers: WORKERS,
        band_timeout_ms: 600_000,
    }
}

/// The `max_iter` at which one row of a long band takes about [`ROW`] here (a debug
/// build renders several times slower than a release one; the machine may be shared).
fn calibrate() -> u32 {
    const PROBE_ITER: u32 = 100_000;
    let view = column(PROBE_ITER);
    let y = view.height - 1; // inside the cardioid
    let best = (0..3)
        .map(|_| {
            let started = std::time::Instant::now();
            render_rows(&view, y, y + 1, &AtomicBool::new(false)).expect("not stopped");
            started.elapsed()
        })
        .min()
        .expect("three runs");
    let scaled = f64::from(PROBE_ITER) * ROW.as_secs_f64() / best.as_secs_f64().max(1e-6);
    scaled.clamp(50_000.0, 500_000_000.0) as u32
}

fn single_threaded(view: &View) -> Vec<u8> {
    render_rows(view, 0, view.height, &AtomicBool::new(false)).expect("not stopped")
}

fn silos(cluster: &TestCluster) -> impl Iterator<Item = &ClusterSilo> {
    std::iter::once(cluster.master()).chain(cluster.slaves().map(|(_, s)| s))
}

/// Turns of `grain_type` that ended so far, all silos (`ClusterSilo::status`).
fn turns(cluster: &TestCluster, grain_type: &str) -> u64 {
    silos(cluster)
        .flat_map(|s| s.status().grain_types)
        .filter(|t| t.grain_type == grain_type)
        .map(|t| t.messages)
        .sum()
}

/// What the workers' turns did, per silo, from every silo's `/metrics`.
#[derive(Debug, Clone, PartialEq, Default)]
struct WorkerTurns {
    /// Per silo: turns that ended.
    ended: Vec<f64>,
    /// Per silo: turns that failed, any kind.
    failed: Vec<f64>,
    /// Per silo: turns that failed as cancelled (the worker returns
    /// `CallError::Cancelled` for a band whose call was cancelled).
    cancelled: Vec<f64>,
}

impl WorkerTurns {
    async fn scrape(cluster: &TestCluster) -> Self {
        let mut out = Self::default();
        for silo in silos(cluster) {
            let m = scrape(silo).await;
            let worker = ("grain_type", WORKER);
            out.ended
                .push(m.sum("granary_messages_handled_total", &[worker]));
            out.failed
                .push(m.sum("granary_handler_failures_total", &[worker]));
            out.cancelled.push(m.sum(
                "granary_handler_failures_total",
                &[worker, ("kind", "cancelled")],
            ));
        }
        out
    }

    /// Per silo, what happened since `before`.
    fn since(&self, before: &Self) -> Self {
        let minus = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a - b).collect();
        Self {
            ended: minus(&self.ended, &before.ended),
            failed: minus(&self.failed, &before.failed),
            cancelled: minus(&self.cancelled, &before.cancelled),
        }
    }

    fn total(v: &[f64]) -> u64 {
        v.iter().sum::<f64>() as u64
    }
}

/// The process's CPU use over [`CPU_WINDOW`], in cores. Every silo runs in this process
/// and this file has a single test, so it is the cluster's.
async fn cpu_cores(cluster: &TestCluster) -> f64 {
    let (before, started) = (cluster.master().status().cpu_ms, Instant::now());
    tokio::time::sleep(CPU_WINDOW).await;
    let used = cluster.master().status().cpu_ms.saturating_sub(before);
    used as f64 / started.elapsed().as_millis().max(1) as f64
}

/// Measures [`cpu_cores`] window after window until `ok` holds; panics after `within`.
async fn cpu_until(
    cluster: &TestCluster,
    what: &str,
    within: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let cores = cpu_cores(cluster).await;
        if ok(cores) {
            return cores;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {cores:.2} cores after {within:?}"
        );
    }
}

/// Where things stood before a job started.
struct Before {
    jobs: u64,
    workers: WorkerTurns,
}

async fn before(cluster: &TestCluster) -> Before {
    Before {
        jobs: turns(cluster, JOB),
        workers: WorkerTurns::scrape(cluster).await,
    }
}

/// Waits until a job has handed a long band to every worker: its cheap bands are in
/// (`bands_in` counts them) and the render threads keep the process busy. Returns the
/// CPU use.
async fn wait_busy(cluster: &TestCluster, bands_in: &AtomicU64) -> f64 {
    eventually("the cheap bands arrive", PROGRESS, || {
        bands_in.load(Ordering::SeqCst) >= u64::from(CHEAP_BANDS)
    })
    .await;
    cpu_until(cluster, "the long bands render", PROGRESS, |c| {
        c > IDLE_CORES
    })
    .await
}

/// A job its caller has just left.
struct Left<'a> {
    /// How it was left, for messages.
    how: &'a str,
    /// The job's key (its workers are `KEY/w0`, `KEY/w1`, …).
    key: &'a str,
    /// The counters before it started.
    before: Before,
    /// When the caller left.
    at: Instant,
    /// How many band calls may have been running then.
    in_flight: RangeInclusive<u64>,
    /// CPU use while its long bands rendered.
    busy_cores: f64,
}

/// Checks that the job `left` describes stopped across the cluster, and prints what it
/// saw.
async fn assert_work_stopped(cluster: &TestCluster, client: &Client, left: Left<'_>) {
    let Left {
        how,
        key,
        before,
        at: left,
        in_flight,
        busy_cores,
    } = left;
    // 1. Every worker is free: a worker runs one turn at a time, so a one-row render
    //    queued behind a long band that was not stopped would wait for most of a minute.
    let tiny = View::new(4, 1, 10);
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| client.grain::<MandelbrotWorker>(format!("{key}/w{w}")))
        .collect();
    let probes = workers.iter().map(|worker| {
        worker
            .ask(RenderBand {
                view: tiny,
                y0: 0,
                y1: 1,
            })
            .timeout(STOP)
            .into_future()
    });
    for (w, probe) in futures::future::join_all(probes)
        .await
        .into_iter()
        .enumerate()
    {
        if let Err(e) = probe {
            panic!("{how}: worker {key}/w{w} is still busy {STOP:?} after the cancel: {e}");
        }
    }
    let free_after = left.elapsed();

    // 2. The job's turn ended (its band calls failed as cancelled at once).
    eventually(&format!("{how}: the job's turn ends"), STOP, || {
        turns(cluster, JOB) - before.jobs == 1
    })
    .await;

    // 3. Each worker turn is counted before its reply goes out, so once the probes are
    //    answered every band call that was running has been counted: exact figures.
    let now = WorkerTurns::scrape(cluster).await;
    let d = now.since(&before.workers);
    let ended = WorkerTurns::total(&d.ended);
    let failed = WorkerTurns::total(&d.failed);
    let cancelled = WorkerTurns::total(&d.cancelled);
    let succeeded = ended - failed;
    assert_eq!(
        failed, cancelled,
        "{how}: every failed band call failed as a cancelled one (no timeout, lost, …): {d:?}"
    );
    assert_eq!(
        succeeded,
        u64::from(CHEAP_BANDS + WORKERS),
        "{how}: the cheap bands and the probes succeeded, and no band after the cancel: {d:?}"
    );
    assert!(
        in_flight.contains(&cancelled),
        "{how}: {cancelled} band calls ended cancelled, expected {in_flight:?}: {d:?}"
    );
    let silos_cancelling = d.cancelled.iter().filter(|&&n| n > 0.0).count();
    assert!(
        silos_cancelling >= 2,
        "{how}: the cancel reached workers on {silos_cancelling} silo(s): {d:?}"
    );

    // 4. Nothing comes back later: every turn that started has ended and the job's turn
    //    is over, so the counters must now stand still. (A fixed window is enough here
    //    only because (3) already established that nothing is running.)
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        WorkerTurns::scrape(cluster).await,
        now,
        "{how}: worker turns ran after the cancel had settled"
    );

    // 5. No render thread outlives its call: the process stops burning CPU. (A worker
    //    that answered the cancel but left its blocking render running would pass (1).)
    let idle_cores = cpu_until(cluster, &format!("{how}: the CPU calms down"), STOP, |c| {
        c < IDLE_CORES
    })
    .await;

    eprintln!(
        "{how}: workers free {} ms after the cancel; {cancelled} band calls cancelled \
         (per silo {:?}); CPU {busy_cores:.2} cores while rendering, {idle_cores:.2} after",
        free_after.as_millis(),
        d.cancelled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_stops_its_workers_across_the_cluster() {
    let max_iter = calibrate();
    eprintln!("max_iter {max_iter}: a long band is {ROWS} rows of ~{ROW:?} single-threaded");
    let cluster = TestCluster::builder()
        .slaves(3)
        .http()
        .build()
        .await
        .unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    // Every worker call may be cancelled: all of them were, or the last band's call
    // (handed out as the last cheap band's event went to the caller) had not started.
    let racing = u64::from(WORKERS - 1)..=u64::from(WORKERS);

    // 1. `cancel()` on the stream.
    let key = "cancelled";
    let b = before(&cluster).await;
    let started = Instant::now();
    let job = client.grain::<MandelbrotJob>(key);
    let mut events = job
        .ask_stream(long_job(max_iter))
        .timeout(JOB_TIMEOUT)
        .buffer(64);
    let bands_in = AtomicU64::new(0);
    let reading = async {
        while bands_in.load(Ordering::SeqCst) < u64::from(CHEAP_BANDS) {
            match events.next().await {
                Some(Ok(JobEvent::Band { band, .. })) => {
                    assert!(band < CHEAP_BANDS, "a long band ({band}) came in");
                    bands_in.fetch_add(1, Ordering::SeqCst);
                }
                Some(Ok(JobEvent::Started { .. })) => {}
                other => panic!("the job ended early: {other:?}"),
            }
        }
    };
    tokio::time::timeout(PROGRESS, reading)
        .await
        .expect("the cheap bands arrive");
    let busy = wait_busy(&cluster, &bands_in).await;
    let to_busy = started.elapsed();
    // The workers are spread over the cluster.
    let hosting = cluster
        .slaves()
        .filter(|(_, s)| {
            (0..WORKERS).any(|w| s.hosts(&GrainId::new(WORKER, format!("{key}/w{w}"))))
        })
        .count();
    assert!(hosting >= 2, "the workers all ran on {hosting} slave(s)");
    events.cancel();
    let left = Instant::now();
    let after_cancel = tokio::time::timeout(SEEN, events.next()).await;
    assert_eq!(
        after_cancel,
        Ok(None),
        "a cancelled stream yields nothing more"
    );
    drop(events);
    let left = Left {
        how: "cancel()",
        key,
        before: b,
        at: left,
        in_flight: racing.clone(),
        busy_cores: busy,
    };
    assert_work_stopped(&cluster, &client, left).await;

    // 2. Dropping `run_job`'s future, as the client's Ctrl-C does.
    let key = "dropped";
    let b = before(&cluster).await;
    let started = Instant::now();
    let bands_in = Arc::new(AtomicU64::new(0));
    let job = client.grain::<MandelbrotJob>(key);
    let busy = {
        let counted = bands_in.clone();
        let rendering = run_job(&job, long_job(max_iter), JOB_TIMEOUT, move |e| {
            if matches!(e, JobEvent::Band { .. }) {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::select! {
            image = rendering => panic!("the job ended: {:?}", image.map(|i| i.height)),
            busy = wait_busy(&cluster, &bands_in) => busy,
        }
        // `rendering` is dropped here, its stream with it.
    };
    let left = Instant::now();
    let to_busy = to_busy.max(started.elapsed());
    assert_eq!(bands_in.load(Ordering::SeqCst), u64::from(CHEAP_BANDS));
    let left = Left {
        how: "drop",
        key,
        before: b,
        at: left,
        in_flight: racing,
        busy_cores: busy,
    };
    assert_work_stopped(&cluster, &client, left).await;

    // 3. The job's own deadline: set well after the cheap bands (as long as the jobs
    //    above took to get busy, twice, plus 3 s), it cancels the long ones.
    let key = "timed-out";
    let deadline = to_busy * 2 + Duration::from_secs(3);
    let b = before(&cluster).await;
    let bands_in = Arc::new(AtomicU64::new(0));
    let job = client.grain::<MandelbrotJob>(key);
    let counted = bands_in.clone();
    let started = Instant::now();
    let rendering = run_job(&job, long_job(max_iter), deadline, move |e| {
        if matches!(e, JobEvent::Band { .. }) {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    tokio::pin!(rendering);
    let busy = tokio::select! {
        image = &mut rendering => panic!("the job ended before it got busy: {:?}", image.map(|i| i.height)),
        busy = wait_busy(&cluster, &bands_in) => busy,
    };
    let result = tokio::time::timeout(deadline + SEEN, rendering)
        .await
        .expect("the job's deadline ends it");
    let left = Instant::now();
    assert_eq!(
        result.map(|i| i.height),
        Err(CallError::Timeout),
        "after {:?} (deadline {deadline:?})",
        started.elapsed()
    );
    assert_eq!(bands_in.load(Ordering::SeqCst), u64::from(CHEAP_BANDS));
    // Every worker had been on its long band for a while: all six calls are cancelled.
    let left = Left {
        how: "deadline",
        key,
        before: b,
        at: left,
        in_flight: u64::from(WORKERS)..=u64::from(WORKERS),
        busy_cores: busy,
    };
    assert_work_stopped(&cluster, &client, left).await;

    // The cluster still serves: the first job's grain and workers render a small image,
    // exactly as a single thread does.
    let view = View::new(96, 64, 300);
    let render = Render {
        bands: 16,
        workers: WORKERS,
        ..Render::new(view)
    };
    let mut bands = 0;
    let image = run_job(
        &client.grain::<MandelbrotJob>("cancelled"),
        render,
        Duration::from_secs(60),
        |e| {
            if matches!(e, JobEvent::Band { .. }) {
                bands += 1;
            }
        },
    )
    .await
    .expect("a job after the cancels completes");
    assert_eq!(bands, 16);
    assert_eq!(image.pixels, single_threaded(&view));
    cluster.shutdown().await;
}
