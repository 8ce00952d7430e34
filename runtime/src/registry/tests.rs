use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::*;
use crate::activation::handler_error;
use crate::grain::{GrainContext, GrainError};
use crate::storage::StorageError;

struct Pinned;
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Echo(String);
#[derive(Serialize, Deserialize)]
struct Plain;
#[derive(Serialize, Deserialize)]
struct NotListed;

#[async_trait]
impl Grain for Pinned {
    const TYPE_NAME: &'static str = "unit.pinned/v1";
    type State = ();
    async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Pinned)
    }
}
#[async_trait]
impl Handler<Echo> for Pinned {
    type Reply = Echo;
    async fn handle(&mut self, m: Echo, _: &mut GrainContext<Self>) -> Result<Echo, GrainError> {
        Ok(m)
    }
}
#[async_trait]
impl Handler<Plain> for Pinned {
    type Reply = u8;
    async fn handle(&mut self, _: Plain, _: &mut GrainContext<Self>) -> Result<u8, GrainError> {
        Ok(7)
    }
}
#[async_trait]
impl Handler<NotListed> for Pinned {
    type Reply = ();
    async fn handle(&mut self, _: NotListed, _: &mut GrainContext<Self>) -> Result<(), GrainError> {
        Ok(())
    }
}

crate::register_grain!(Pinned, handles = [Echo as "echo/v1", Plain]);

#[test]
fn registration_is_indexed_by_name_and_type() {
    let entry = registry().get("unit.pinned/v1").expect("registered");
    assert_eq!(entry.rust_name, "Pinned");
    let names: Vec<_> = entry.messages.iter().map(|m| m.message).collect();
    assert_eq!(names, ["echo/v1", "Plain"], "pinned and default wire names");
    assert!(registry()
        .grain_types()
        .iter()
        .any(|e| e.type_name == "unit.pinned/v1"));
    assert!(
        registry().problems().is_empty(),
        "{:?}",
        registry().problems()
    );
}

#[test]
fn vtables_encode_messages_and_decode_replies() {
    let vt = registry().vtable::<Pinned, Echo>().unwrap();
    assert_eq!((vt.grain_type, vt.message), ("unit.pinned/v1", "echo/v1"));
    let msg: Box<dyn Any + Send> = Box::new(Echo("hi".into()));
    let bytes = (vt.encode)(msg.as_ref()).unwrap();
    assert_eq!(codec::decode::<Echo>(&bytes).unwrap(), Echo("hi".into()));
    let reply = (vt.decode_reply)(&codec::encode(&Echo("back".into())).unwrap()).unwrap();
    assert_eq!(reply.downcast::<Echo>().unwrap(), Echo("back".into()));
    // The wrong type is an error, not a panic.
    let wrong: Box<dyn Any + Send> = Box::new(5u32);
    assert!((vt.encode)(wrong.as_ref()).is_err());
}

#[test]
fn unlisted_messages_and_unregistered_grains_are_named_errors() {
    assert!(matches!(
        registry().vtable::<Pinned, NotListed>(),
        Err(CallError::UnknownMessage { ref grain_type, .. }) if grain_type == "unit.pinned/v1"
    ));
    struct Unregistered;
    #[async_trait]
    impl Grain for Unregistered {
        const TYPE_NAME: &'static str = "unit.unregistered/v1";
        type State = ();
        async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> {
            Ok(Unregistered)
        }
    }
    assert_eq!(
        registry().vtable::<Unregistered, Plain>().unwrap_err(),
        CallError::UnknownGrainType("unit.unregistered/v1".into())
    );
}

#[test]
fn storage_errors_from_handlers_map_to_storage_call_errors() {
    let err: GrainError = Box::new(StorageError::Unavailable("down".into()));
    assert_eq!(
        handler_error(err),
        CallError::Storage("storage unavailable: down".into())
    );
    let err: GrainError = "nope".into();
    assert_eq!(handler_error(err), CallError::Handler("nope".into()));
}

#[test]
fn a_cancelled_nested_call_passed_on_ends_the_call_as_cancelled() {
    let err: GrainError = Box::new(CallError::Cancelled);
    assert_eq!(handler_error(err), CallError::Cancelled);
    // Any other call error stays the handler's failure (its delivery is the handler's).
    let err: GrainError = Box::new(CallError::MailboxFull);
    assert_eq!(
        handler_error(err),
        CallError::Handler(CallError::MailboxFull.to_string())
    );
}
