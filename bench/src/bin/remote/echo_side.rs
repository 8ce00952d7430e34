//! The floor: the raw echo server ([`granary_bench::echo`]) in a child process.

use granary_bench::echo::EchoClient;

use crate::measure::Caller;

impl Caller for EchoClient {
    async fn call(&self, _target: usize, payload: &[u8]) -> anyhow::Result<usize> {
        EchoClient::call(self, payload).await
    }
}
