//! The example grains in one process, on the embedded store by default.
//!
//! Each run adds 1 to the persistent counter `demo`, so its value grows across runs:
//! state survives a restart of the demo.

use std::time::Duration;

use clap::Parser;
use granary_example::{Account, Add, Counter, Follow, Followers, Greeter, Hello};
use granary_silo::storage::StorageSpec;
use granary_silo::{Silo, SiloConfig};

/// Runs the example grains in one silo and prints what they answer.
#[derive(Debug, Parser)]
struct Args {
    /// Where grain state lives: `memory`, `embedded:PATH` (or a bare path), or `mongodb://…`.
    #[arg(long, env = "GRANARY_STORAGE", default_value_t = StorageSpec::default())]
    storage: StorageSpec,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    println!(
        "granary demo: grain types {:?}",
        granary_example::grain_types()
    );
    println!("storage: {}", args.storage);
    let storage = args.storage.open().await?;
    let silo = Silo::start(SiloConfig::default(), storage).await?;
    let timeout = Duration::from_secs(5);

    let greeting = silo
        .grain::<Greeter>("world")
        .ask(Hello("demo".into()))
        .timeout(timeout)
        .await?;
    println!("greeter world  -> {greeting}");

    let value = silo
        .grain::<Counter>("demo")
        .ask(Add(1))
        .timeout(timeout)
        .await?;
    println!("counter demo   -> {value}  (persisted; run the demo again and it grows)");

    let alice = silo.grain::<Account>("alice");
    let bob_followers = alice.ask(Follow("bob".into())).timeout(timeout).await?;
    silo.grain::<Account>("carol")
        .ask(Follow("bob".into()))
        .timeout(timeout)
        .await?;
    let followers = silo
        .grain::<Account>("bob")
        .ask(Followers)
        .timeout(timeout)
        .await?;
    println!("account alice follows bob -> bob had {bob_followers} follower(s); now {followers}");

    silo.shutdown().await;
    println!("demo done: state written, silo stopped");
    Ok(())
}
