//! `client mandelbrot`: renders a Mandelbrot image on the cluster and writes a PNG,
//! with a progress bar on stderr; Ctrl-C cancels the job on the cluster.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use granary_client::Client;
use granary_example::mandelbrot::{png, run_job, JobEvent, Render, View};
use granary_example::MandelbrotJob;
use tokio::time::Instant;

/// The `mandelbrot` subcommand's options.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Image width in pixels.
    #[arg(long, default_value_t = 1600)]
    width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 1200)]
    height: u32,
    /// Where to write the PNG.
    #[arg(long, default_value = "mandelbrot.png")]
    out: PathBuf,
    /// Iterations before a point counts as inside the set.
    #[arg(long, default_value_t = 1000)]
    max_iter: u32,
    /// Row bands the image is split into (default: one per 8 rows).
    #[arg(long)]
    bands: Option<u32>,
    /// Worker grains (each renders one band at a time; spread over the slaves).
    #[arg(long, default_value_t = 16)]
    workers: u32,
    /// The job's id (its grain key); a fresh one by default.
    #[arg(long)]
    job: Option<String>,
    /// Deadline of the whole job.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    job_timeout: Duration,
    /// No progress bar (print one summary line).
    #[arg(long)]
    quiet: bool,
}

/// Runs the job; `Ok(false)` if it was interrupted by Ctrl-C (and cancelled).
pub async fn run(client: &Client, options: Options) -> anyhow::Result<bool> {
    let view = View::new(options.width, options.height, options.max_iter);
    let mut render = Render::new(view);
    if let Some(bands) = options.bands {
        render.bands = bands;
    }
    render.workers = options.workers;
    let key = options
        .job
        .clone()
        .unwrap_or_else(|| format!("job-{}-{:08x}", std::process::id(), fastrand_u32()));
    let job = client.grain::<MandelbrotJob>(&key);
    let started = Instant::now();
    let mut done = 0u32;
    let mut total = 0u32;
    let mut redispatched = 0u32;
    let quiet = options.quiet;
    let rendering = run_job(&job, render, options.job_timeout, |event| {
        match event {
            JobEvent::Started { bands, .. } => total = *bands,
            JobEvent::Band { .. } => done += 1,
            JobEvent::Redispatched { .. } => redispatched += 1,
        }
        if !quiet {
            draw(done, total, redispatched, started.elapsed());
        }
    });
    let image = tokio::select! {
        image = rendering => image,
        _ = tokio::signal::ctrl_c() => {
            // Dropping the job's stream above cancels it on the cluster.
            eprintln!("\ninterrupted: the job is cancelled on the cluster");
            return Ok(false);
        }
    };
    let image = image?;
    if !quiet {
        eprintln!();
    }
    std::fs::write(&options.out, png(image.width, image.height, &image.pixels))?;
    println!(
        "{}x{} in {:.2} s ({} bands, {} re-dispatched) -> {}",
        image.width,
        image.height,
        started.elapsed().as_secs_f64(),
        total,
        redispatched,
        options.out.display()
    );
    Ok(true)
}

fn draw(done: u32, total: u32, redispatched: u32, elapsed: Duration) {
    const WIDTH: u32 = 40;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(0);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '.' })
        .collect();
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r[{bar}] {done}/{total} bands{} {:.1} s",
        if redispatched > 0 {
            format!(" ({redispatched} re-dispatched)")
        } else {
            String::new()
        },
        elapsed.as_secs_f64()
    );
    let _ = err.flush();
}

/// A random id part without a dependency: the clock's nanoseconds.
fn fastrand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0)
}
