//! [`Greeter`]: ask it `Hello(name)`, get a greeting back. Keeps nothing.

use granary_runtime::prelude::*;
use serde::{Deserialize, Serialize};

/// A stateless grain that greets; counts greetings in memory only.
#[derive(Debug)]
pub struct Greeter {
    /// Greetings since this activation started (lost on deactivation, by design).
    greeted: u64,
}

/// Ask: greet `0`; the reply names the greeter and how many it has greeted.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello(pub String);

#[async_trait]
impl Grain for Greeter {
    const TYPE_NAME: &'static str = "example.greeter/v1";
    type State = ();

    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Greeter { greeted: 0 })
    }
}

#[async_trait]
impl Handler<Hello> for Greeter {
    type Reply = String;

    async fn handle(
        &mut self,
        Hello(name): Hello,
        ctx: &mut GrainContext<Self>,
    ) -> Result<String, GrainError> {
        self.greeted += 1;
        Ok(format!(
            "Hello, {name}! I am greeter {:?}; you are visitor #{} of this activation.",
            ctx.key(),
            self.greeted
        ))
    }
}

granary_runtime::register_grain!(Greeter, handles = [Hello]);
