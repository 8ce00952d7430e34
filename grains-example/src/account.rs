//! [`Account`]: the social example. `Follow(b)` sent to account `a` makes `a` call
//! `AddFollower(a)` on account `b`, a grain-to-grain call that may cross silos.
//!
//! Followers are kept as a set of keys, so a retried `Follow` never counts twice.

use std::collections::BTreeSet;

use granary_runtime::prelude::*;
use serde::{Deserialize, Serialize};

/// A user account.
#[derive(Debug)]
pub struct Account;

/// An account's stored state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AccountState {
    /// Accounts that follow this one.
    pub followers: BTreeSet<String>,
    /// Accounts this one follows.
    pub following: BTreeSet<String>,
}

/// Ask: follow the account with key `0`. Replies with that account's follower count.
#[derive(Debug, Serialize, Deserialize)]
pub struct Follow(pub String);

/// Ask (sent by `Follow`, i.e. `increment_followers`): account `0` now follows this one.
/// Replies with the follower count. Idempotent.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddFollower(pub String);

/// Ask: the follower count.
#[derive(Debug, Serialize, Deserialize)]
pub struct Followers;

/// Ask: the keys this account follows.
#[derive(Debug, Serialize, Deserialize)]
pub struct Following;

#[async_trait]
impl Grain for Account {
    const TYPE_NAME: &'static str = "example.account/v1";
    type State = AccountState;

    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Account)
    }
}

#[async_trait]
impl Handler<Follow> for Account {
    type Reply = u64;

    async fn handle(
        &mut self,
        Follow(other): Follow,
        ctx: &mut GrainContext<Self>,
    ) -> Result<u64, GrainError> {
        if other == ctx.key() {
            // Asking ourselves would wait for our own turn: refuse instead.
            return Err("an account cannot follow itself".into());
        }
        let me = ctx.key().to_owned();
        let count = ctx.grain::<Account>(&other).ask(AddFollower(me)).await?;
        if !ctx.state().following.contains(&other) {
            ctx.state_mut().following.insert(other);
            ctx.write_state().await?;
        }
        Ok(count)
    }
}

#[async_trait]
impl Handler<AddFollower> for Account {
    type Reply = u64;

    async fn handle(
        &mut self,
        AddFollower(follower): AddFollower,
        ctx: &mut GrainContext<Self>,
    ) -> Result<u64, GrainError> {
        if !ctx.state().followers.contains(&follower) {
            ctx.state_mut().followers.insert(follower);
            ctx.write_state().await?;
        }
        Ok(ctx.state().followers.len() as u64)
    }
}

#[async_trait]
impl Handler<Followers> for Account {
    type Reply = u64;

    async fn handle(
        &mut self,
        _: Followers,
        ctx: &mut GrainContext<Self>,
    ) -> Result<u64, GrainError> {
        Ok(ctx.state().followers.len() as u64)
    }
}

#[async_trait]
impl Handler<Following> for Account {
    type Reply = Vec<String>;

    async fn handle(
        &mut self,
        _: Following,
        ctx: &mut GrainContext<Self>,
    ) -> Result<Vec<String>, GrainError> {
        Ok(ctx.state().following.iter().cloned().collect())
    }
}

granary_runtime::register_grain!(
    Account,
    handles = [Follow, AddFollower as "increment_followers", Followers, Following]
);
