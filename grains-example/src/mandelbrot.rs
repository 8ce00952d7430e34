//! The distributed job example: a Mandelbrot render split into row bands.
//!
//! A [`MandelbrotJob`] (entered through any gateway; one per job id) splits the image
//! into bands and hands them to [`MandelbrotWorker`]s, keyed `JOB/w0`, `JOB/w1`, … and
//! so spread over the slaves by the master's placement. Each worker renders one band at
//! a time (on a blocking thread, so the silo keeps serving); a worker that finishes gets
//! the next band, so faster slaves take more bands. The job streams a [`JobEvent`] per
//! finished band (progress and the band's pixels) to its caller, who assembles the
//! image ([`run_job`]).
//!
//! ```text
//! client ──ask_stream(Render)──► MandelbrotJob "j1"
//!                                  ├─ask(RenderBand 0)──► MandelbrotWorker "j1/w0"  (slave A)
//!                                  ├─ask(RenderBand 1)──► MandelbrotWorker "j1/w1"  (slave B)
//!   ◄── Band{0, pixels} ───────────┤   …one band per worker at a time…
//!   ◄── Band{1, pixels} ───────────┘
//! ```
//!
//! **Rescheduling.** A band whose call fails (its slave died: the connection is lost, or
//! the call times out) goes back to the queue and is handed out again; the worker key
//! that failed rests a moment, and its next call activates it on a live slave once the
//! master has dropped the dead one. Bands are counted by id: a band's pixels are sent
//! once, a late duplicate is ignored, and the job ends only when every band is in.
//!
//! **Cancellation.** A caller that drops the stream (Ctrl-C in the client) cancels the
//! job's turn; its pending band calls are cancelled with it, and each worker stops its
//! render after the current row.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use granary_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

mod render;

pub use render::{bands, png, render_rows, View};

/// How many times one band is tried before the job gives up.
pub const MAX_ATTEMPTS: u32 = 20;
/// How long a worker key that failed rests before it is given another band.
const REST: Duration = Duration::from_millis(250);

/// Renders bands of Mandelbrot images; keeps nothing between calls.
#[derive(Debug)]
pub struct MandelbrotWorker;

/// Ask: render rows `y0..y1` of `view`; the reply is the band's pixels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenderBand {
    /// The view rendered.
    pub view: View,
    /// First row.
    pub y0: u32,
    /// One past the last row.
    pub y1: u32,
}

/// A rendered band.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BandPixels {
    /// One gray byte per pixel, row after row.
    #[serde(with = "serde_bytes")]
    pub pixels: Vec<u8>,
    /// Time spent rendering, in milliseconds.
    pub render_ms: u32,
}

#[async_trait]
impl Grain for MandelbrotWorker {
    const TYPE_NAME: &'static str = "example.mandelbrot-worker/v1";
    type State = ();
    async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(MandelbrotWorker)
    }
}

#[async_trait]
impl Handler<RenderBand> for MandelbrotWorker {
    type Reply = BandPixels;
    async fn handle(
        &mut self,
        band: RenderBand,
        ctx: &mut GrainContext<Self>,
    ) -> Result<BandPixels, GrainError> {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let rendering = {
            let stop = stop.clone();
            tokio::task::spawn_blocking(move || render_rows(&band.view, band.y0, band.y1, &stop))
        };
        tokio::pin!(rendering);
        let rendered = tokio::select! {
            rendered = &mut rendering => rendered,
            () = ctx.cancelled() => {
                // The render stops after its current row; wait for it, so no thread
                // outlives the call.
                stop.store(true, Ordering::Relaxed);
                let _ = rendering.await;
                return Err(CallError::Cancelled.into());
            }
        };
        match rendered {
            Ok(Some(pixels)) => Ok(BandPixels {
                pixels,
                render_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
            }),
            Ok(None) => Err(CallError::Cancelled.into()),
            Err(e) => Err(format!("the render failed: {e}").into()),
        }
    }
}

granary_runtime::register_grain!(MandelbrotWorker, handles = [RenderBand]);

/// Splits one render into bands, farms them out and streams the results.
#[derive(Debug)]
pub struct MandelbrotJob;

/// Stream: render `view` in `bands` bands on `workers` worker grains.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Render {
    /// What to render.
    pub view: View,
    /// How many bands (at most one per row).
    pub bands: u32,
    /// How many worker grains (each renders one band at a time).
    pub workers: u32,
    /// Deadline of one band's call; a band that misses it is handed out again.
    pub band_timeout_ms: u32,
}

impl Render {
    /// `view` in bands of about 8 rows, on 16 workers, 2 minutes per band.
    pub fn new(view: View) -> Self {
        Self {
            view,
            bands: view.height.div_ceil(8),
            workers: 16,
            band_timeout_ms: 120_000,
        }
    }
}

/// What a job streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobEvent {
    /// The job started: this many bands, on this many workers.
    Started {
        /// Bands in the image.
        bands: u32,
        /// Worker grains used.
        workers: u32,
    },
    /// One band is done (each band id comes exactly once).
    Band {
        /// The band's id.
        band: u32,
        /// Its first row.
        y0: u32,
        /// Its pixels (`width` × rows bytes).
        #[serde(with = "serde_bytes")]
        pixels: Vec<u8>,
        /// The worker that rendered it.
        worker: u32,
        /// Time the worker spent on it, in milliseconds.
        render_ms: u32,
    },
    /// A band's call failed; the band is handed out again.
    Redispatched {
        /// The band's id.
        band: u32,
        /// Why its call failed.
        error: String,
    },
}

/// What one of the job's pending futures produced.
enum Done {
    /// A band's call ended.
    Band {
        worker: u32,
        band: u32,
        result: Result<BandPixels, CallError>,
    },
    /// A worker finished resting after a failure.
    Rested { worker: u32 },
}

type Pending<'a> = FuturesUnordered<Pin<Box<dyn Future<Output = Done> + Send + 'a>>>;

#[async_trait]
impl Grain for MandelbrotJob {
    const TYPE_NAME: &'static str = "example.mandelbrot-job/v1";
    type State = ();
    async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(MandelbrotJob)
    }
}

#[async_trait]
impl StreamHandler<Render> for MandelbrotJob {
    type Item = JobEvent;
    async fn handle_stream(
        &mut self,
        job: Render,
        replies: &mut Replies<JobEvent>,
        ctx: &mut GrainContext<Self>,
    ) -> Result<(), GrainError> {
        let view = job.view;
        let ranges = bands(view.height, job.bands);
        let total = ranges.len();
        let workers: Vec<GrainRef<MandelbrotWorker>> = (0..job.workers.clamp(1, 4096))
            .map(|i| ctx.grain(format!("{}/w{i}", ctx.key())))
            .collect();
        let band_timeout = Duration::from_millis(u64::from(job.band_timeout_ms.max(1)));
        replies
            .send(JobEvent::Started {
                bands: total as u32,
                workers: workers.len() as u32,
            })
            .await?;

        let mut queue: std::collections::VecDeque<u32> = (0..total as u32).collect();
        let mut attempts = vec![0u32; total];
        let mut got = vec![false; total];
        let mut remaining = total;
        let mut idle: Vec<u32> = (0..workers.len() as u32).rev().collect();
        let mut pending: Pending<'_> = FuturesUnordered::new();
        while remaining > 0 {
            // Every idle worker gets a band while bands wait.
            while let (Some(&worker), Some(&band)) = (idle.last(), queue.front()) {
                idle.pop();
                queue.pop_front();
                attempts[band as usize] += 1;
                let (y0, y1) = ranges[band as usize];
                let call = workers[worker as usize]
                    .ask(RenderBand { view, y0, y1 })
                    .timeout(band_timeout);
                pending.push(Box::pin(async move {
                    Done::Band {
                        worker,
                        band,
                        result: call.await,
                    }
                }));
            }
            let Some(done) = pending.next().await else {
                return Err("no worker left to render the remaining bands".into());
            };
            match done {
                Done::Rested { worker } => idle.push(worker),
                Done::Band {
                    worker,
                    band,
                    result: Ok(rendered),
                } => {
                    idle.push(worker);
                    if std::mem::replace(&mut got[band as usize], true) {
                        continue; // a late duplicate: counted once already
                    }
                    remaining -= 1;
                    replies
                        .send(JobEvent::Band {
                            band,
                            y0: ranges[band as usize].0,
                            pixels: rendered.pixels,
                            worker,
                            render_ms: rendered.render_ms,
                        })
                        .await?;
                }
                Done::Band {
                    result: Err(CallError::Cancelled),
                    ..
                } => return Err(CallError::Cancelled.into()),
                Done::Band {
                    worker,
                    band,
                    result: Err(e),
                } => {
                    if got[band as usize] {
                        idle.push(worker);
                        continue;
                    }
                    if attempts[band as usize] >= MAX_ATTEMPTS {
                        return Err(format!("band {band} failed {MAX_ATTEMPTS} times: {e}").into());
                    }
                    tracing::warn!(band, worker, error = %e, "band failed; handing it out again");
                    queue.push_front(band);
                    pending.push(Box::pin(async move {
                        tokio::time::sleep(REST).await;
                        Done::Rested { worker }
                    }));
                    replies
                        .send(JobEvent::Redispatched {
                            band,
                            error: e.to_string(),
                        })
                        .await?;
                }
            }
        }
        Ok(())
    }
}

granary_runtime::register_grain!(MandelbrotJob, handles = [], streams = [Render]);

/// A rendered image: `width` × `height` gray bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// One gray byte per pixel, row after row.
    pub pixels: Vec<u8>,
}

/// Runs `render` on `job` and assembles the image from its bands, calling `progress`
/// with every event. Fails if the job fails, or if it ends without every band (each
/// band must arrive exactly once).
pub async fn run_job(
    job: &GrainRef<MandelbrotJob>,
    render: Render,
    timeout: Duration,
    mut progress: impl FnMut(&JobEvent),
) -> Result<Image, CallError> {
    let view = render.view;
    let mut pixels = vec![0u8; view.width as usize * view.height as usize];
    let mut seen = Vec::new();
    let mut events = job.ask_stream(render).timeout(timeout).buffer(64);
    while let Some(event) = events.next().await {
        let event = event?;
        match &event {
            JobEvent::Started { bands, .. } => seen = vec![false; *bands as usize],
            JobEvent::Band {
                band,
                y0,
                pixels: band_pixels,
                ..
            } => {
                let start = *y0 as usize * view.width as usize;
                let slot = seen.get_mut(*band as usize);
                let fits = start + band_pixels.len() <= pixels.len();
                match slot {
                    Some(seen) if !*seen && fits => *seen = true,
                    _ => {
                        return Err(CallError::Handler(format!(
                            "band {band} arrived twice or out of range"
                        )))
                    }
                }
                pixels[start..start + band_pixels.len()].copy_from_slice(band_pixels);
            }
            JobEvent::Redispatched { .. } => {}
        }
        progress(&event);
    }
    if seen.is_empty() || seen.iter().any(|s| !s) {
        return Err(CallError::Handler(
            "the job ended without every band".into(),
        ));
    }
    Ok(Image {
        width: view.width,
        height: view.height,
        pixels,
    })
}

#[cfg(test)]
mod tests;
