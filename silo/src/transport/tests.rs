//! Unit tests for the server's error responses.

use super::*;

#[test]
fn failures_answer_with_the_matching_response_kind() {
    use granary_proto::frame::{GrainCall, SiloAddr};
    use granary_proto::GrainId;

    let grain = GrainId::new("t/v1", "k");
    let silo = SiloAddr::new("127.0.0.1:1".parse().unwrap(), 1);
    let panicked = Failure::Panicked("boom".into());
    let cases = [
        Request::Grain(GrainCall {
            target: grain.clone(),
            message: "m".into(),
            payload: vec![],
            timeout_ms: 1,
            hops: 0,
            one_way: false,
            stream: None,
            trace: None,
            replica: None,
        }),
        Request::DirectoryResolve {
            grain: grain.clone(),
            from: None,
        },
        Request::DirectoryUnregister {
            grain: grain.clone(),
            silo,
        },
        Request::StorageRead {
            grain: grain.clone(),
        },
        Request::StorageWrite {
            grain: grain.clone(),
            data: vec![],
            expected: None,
        },
        Request::StorageClear {
            grain,
            expected: None,
        },
        Request::Ping,
    ];
    let answers: Vec<Response> = cases
        .iter()
        .map(|r| RequestKind::of(r).failure(&panicked))
        .collect();
    assert_eq!(
        answers[0],
        Response::Grain(Err(CallError::Panicked("boom".into())))
    );
    assert_eq!(
        answers[1],
        Response::Directory {
            epoch: 0,
            result: Err(CallError::Panicked("boom".into()))
        }
    );
    assert!(matches!(
        answers[2],
        Response::Directory { result: Err(_), .. }
    ));
    assert!(matches!(
        answers[3],
        Response::StorageRead(Err(WireStorageError::Failed(_)))
    ));
    assert!(matches!(answers[4], Response::StorageWrite(Err(_))));
    assert!(matches!(answers[5], Response::StorageClear(Err(_))));
    assert_eq!(answers[6], Response::Pong);
    assert!(matches!(
        RequestKind::Grain.failure(&Failure::Unencodable("big".into())),
        Response::Grain(Err(CallError::Codec(_)))
    ));
}
