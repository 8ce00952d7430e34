//! [`Digest`]: a stateless worker doing CPU-bound work. Every copy can take any
//! message, so a hot `Digest` grain spreads over several activations on one silo and
//! over several silos (see `granary_runtime::replication`).

use granary_runtime::prelude::*;
use serde::{Deserialize, Serialize};

/// Hashes numbers; keeps nothing, so any number of copies can serve one key.
#[derive(Debug)]
pub struct Digest;

/// Ask: mix `seed` through `rounds` rounds of a 64-bit hash; replies with the result.
/// About 1 ns per round on a current core: `rounds = 200_000` is ~200 µs of work.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hash {
    /// Where to start.
    pub seed: u64,
    /// How many rounds.
    pub rounds: u32,
}

#[async_trait]
impl Grain for Digest {
    const TYPE_NAME: &'static str = "example.digest/v1";
    type State = ();
    const REPLICATION: Replication = Replication::STATELESS_WORKER;

    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Digest)
    }
}

#[async_trait]
impl Handler<Hash> for Digest {
    type Reply = u64;

    async fn handle(
        &mut self,
        msg: Hash,
        _ctx: &mut GrainContext<Self>,
    ) -> Result<u64, GrainError> {
        Ok(mix(msg.seed, msg.rounds))
    }
}

/// `rounds` rounds of splitmix64 from `seed`.
pub fn mix(seed: u64, rounds: u32) -> u64 {
    let mut x = seed;
    for _ in 0..rounds {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x = std::hint::black_box(z ^ (z >> 31));
    }
    x
}

granary_runtime::register_grain!(Digest, handles = [Hash]);
