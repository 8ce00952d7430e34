//! The distributed Mandelbrot job: on a `TestCluster` of three slaves it produces
//! exactly the pixels of a single-threaded render; with real silo processes it survives
//! a `kill -9` of a slave mid-job (the dead slave's bands are handed out again, each band
//! counted once) and still returns the exact image; the `client mandelbrot` command
//! writes a PNG.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use granary_example::mandelbrot::{render_rows, run_job, JobEvent, Render, View};
use granary_example::{MandelbrotJob, MandelbrotWorker};
use granary_runtime::Grain;
use granary_silo::testing::TestCluster;

mod support;
use support::*;

fn single_threaded(view: &View) -> Vec<u8> {
    render_rows(view, 0, view.height, &AtomicBool::new(false)).expect("not stopped")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_three_slaves_renders_exactly_the_single_threaded_pixels() {
    let cluster = TestCluster::builder().slaves(3).build().await.unwrap();
    cluster
        .wait_for_membership_stable(Duration::from_secs(10))
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    let view = View::new(96, 64, 300);
    let render = Render {
        bands: 16,
        workers: 6,
        ..Render::new(view)
    };
    let mut events = Vec::new();
    let job = client.grain::<MandelbrotJob>("small");
    let image = run_job(&job, render, Duration::from_secs(60), |e| {
        events.push(match e {
            JobEvent::Band { band, .. } => format!("band {band}"),
            other => format!("{other:?}"),
        })
    })
    .await
    .unwrap();
    assert_eq!(image.pixels, single_threaded(&view));
    assert_eq!(
        events.len(),
        17,
        "started, then one event per band: {events:?}"
    );
    // The workers were spread over more than one slave.
    let hosting = cluster
        .slaves()
        .filter(|(_, s)| {
            (0..6).any(|w| {
                s.hosts(&granary_proto::GrainId::new(
                    MandelbrotWorker::TYPE_NAME,
                    format!("small/w{w}"),
                ))
            })
        })
        .count();
    assert!(hosting >= 2, "the workers all ran on {hosting} slave(s)");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_of_a_slave_mid_job_still_yields_the_exact_image() {
    let mut procs = Procs::new("mandelbrot-kill9");
    bounded(Duration::from_secs(150), kill_mid_job(&mut procs)).await;
}

async fn kill_mid_job(procs: &mut Procs) {
    let cluster = procs.start_cluster("", 3, Some(KEY)).await;
    let gateway = procs.ports(cluster.master).tcp;
    let client = connect(&[gateway]).await;
    let view = View::new(320, 240, 4000);
    let render = Render {
        bands: 80,
        workers: 9,
        band_timeout_ms: 60_000,
        ..Render::new(view)
    };
    let job_key = "survivor";
    let job = client.grain::<MandelbrotJob>(job_key);
    let mut bands_in = 0;
    let mut killed = None;
    let mut redispatched = HashSet::new();
    let image = run_job(
        &job,
        render,
        Duration::from_secs(120),
        |event| match event {
            JobEvent::Band { .. } => {
                bands_in += 1;
                if bands_in == 8 && killed.is_none() {
                    // The victim: a slave running workers of this job, but not the job.
                    let victim = cluster
                        .slaves
                        .iter()
                        .copied()
                        .filter(|&s| !procs.activated::<MandelbrotJob>(s).contains(job_key))
                        .max_by_key(|&s| {
                            procs
                                .activated::<MandelbrotWorker>(s)
                                .iter()
                                .filter(|k| k.starts_with("survivor/"))
                                .count()
                        })
                        .expect("a slave without the job");
                    procs.kill9(victim);
                    killed = Some(victim);
                }
            }
            JobEvent::Redispatched { band, .. } => {
                redispatched.insert(*band);
            }
            JobEvent::Started { .. } => {}
        },
    )
    .await
    .expect("the job survives the kill");
    let victim = killed.expect("the job outlasted 8 bands");
    assert!(!procs.alive(victim));
    assert_eq!(bands_in, 80, "every band exactly once");
    assert!(
        !redispatched.is_empty(),
        "the killed slave's bands were handed out again"
    );
    eprintln!(
        "killed slave {victim} after 8 of 80 bands; {} band(s) re-dispatched: {redispatched:?}",
        redispatched.len()
    );
    assert_eq!(image.pixels, single_threaded(&view), "the exact image");

    // The command line writes a PNG of the right size.
    let out = procs.dir().join("m.png");
    let printed = client_bin(
        gateway,
        &[
            "--cluster-key",
            KEY,
            "mandelbrot",
            "--width",
            "64",
            "--height",
            "48",
            "--max-iter",
            "100",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert!(printed.contains("64x48"), "{printed}");
    let png = std::fs::read(&out).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[16..24], &[0, 0, 0, 64, 0, 0, 0, 48]);
    client.close().await;
}
