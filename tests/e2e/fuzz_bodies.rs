//! Property tests on stable Rust (`proptest`): malformed protobuf bodies
//! sent to every RPC of a running server.

use std::time::Duration;

use bytes::{Buf, BufMut};
use clef::pb;
use proptest::prelude::*;
use prost::Message;
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    Code, Status,
};

use crate::{
    common::*,
    fuzz::{runner, runtime},
};

/// Sends and receives message bodies as they are.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// An RPC of clef, and the first field of its request message.
#[derive(Debug, Clone)]
struct Rpc {
    path: String,
    /// (number, wire type it takes, whether it is a string).
    field: Option<(u32, u8, bool)>,
}

/// Every RPC of every clef service, from the descriptors reflection serves.
fn rpcs() -> Vec<Rpc> {
    use prost_types::field_descriptor_proto::Type;
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let messages: std::collections::HashMap<String, prost_types::DescriptorProto> = set
        .file
        .iter()
        .flat_map(|f| {
            f.message_type
                .iter()
                .map(move |m| (format!(".{}.{}", f.package(), m.name()), m.clone()))
        })
        .collect();
    let mut out = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "clef.v1") {
        for service in &file.service {
            for method in &service.method {
                let input = &messages[method.input_type()];
                let field = input.field.first().map(|f| {
                    let wire = match f.r#type() {
                        Type::String | Type::Bytes | Type::Message | Type::Group => 2,
                        Type::Fixed64 | Type::Sfixed64 | Type::Double => 1,
                        Type::Fixed32 | Type::Sfixed32 | Type::Float => 5,
                        _ => 0,
                    };
                    (f.number() as u32, wire, f.r#type() == Type::String)
                });
                out.push(Rpc {
                    path: format!("/clef.v1.{}/{}", service.name(), method.name()),
                    field,
                });
            }
        }
    }
    assert!(out.len() >= 39, "{} RPCs", out.len());
    out
}

fn tag(field: u32, wire: u8) -> Vec<u8> {
    let mut v = Vec::new();
    prost::encoding::encode_varint(u64::from(field << 3 | u32::from(wire)), &mut v);
    v
}

/// Bodies no decoder may accept, whatever the message, named.
fn malformed(rpc: &Rpc) -> Vec<(&'static str, Vec<u8>)> {
    let (n, wire, string) = rpc.field.unwrap_or((1, 2, false));
    let mut cases = vec![
        // Field 0 does not exist.
        ("tag 0", vec![0x00, 0x01]),
        // Wire types 6 and 7 do not exist.
        ("wire type 7", [tag(n, 7), vec![1]].concat()),
        // A length running past the end (skipped or not, it is cut).
        (
            "length past the end",
            [tag(n, 2), vec![10, b'a', b'b']].concat(),
        ),
        // A varint cut after a continuation byte.
        ("cut varint", [tag(n, 0), vec![0x80]].concat()),
    ];
    if rpc.field.is_some() {
        // The field with a wire type it does not take.
        let wrong = match wire {
            2 => [tag(n, 0), vec![1]].concat(),
            5 => [tag(n, 1), vec![0; 8]].concat(),
            _ => [tag(n, 5), vec![0; 4]].concat(),
        };
        cases.push(("wrong wire type", wrong));
    }
    if string {
        cases.push((
            "string not UTF-8",
            [tag(n, 2), vec![2, 0xFF, 0xFE]].concat(),
        ));
    }
    cases
}

/// Sends `bodies` as the messages of a call to `path`; returns its code.
async fn send(
    channel: &tonic::transport::Channel,
    key: Option<&str>,
    path: &str,
    bodies: Vec<Vec<u8>>,
) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("the server is up");
    let mut request = tonic::Request::new(tokio_stream::iter(bodies));
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    let call = async {
        let mut s = grpc
            .streaming(request, PathAndQuery::try_from(path).unwrap(), Raw)
            .await?
            .into_inner();
        while s.message().await?.is_some() {}
        Ok::<_, Status>(())
    };
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(())) => Code::Ok,
        Ok(Err(s)) => s.code(),
        Err(_) => panic!("{path}: no answer in 10 s"),
    }
}

/// The options of an import into `account`, encoded.
fn import_options(account: &str) -> Vec<u8> {
    pb::ImportUsersRequest {
        msg: Some(pb::import_users_request::Msg::Options(pb::ImportOptions {
            account_code: account.into(),
            mode: pb::ImportMode::Add as i32,
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

async fn still_up(app: &TestApp) {
    create_org(&mut app.operator_accounts().await, "Still up").await;
}

/// Regression test, once a bug: a request body that is not valid protobuf is INTERNAL
/// (tonic's decoder maps prost's error so) on every unary and server-
/// streaming RPC, and the first message of ImportUsers is UNAVAILABLE ("the
/// client stream ended abnormally"); a malformed request is the caller's
/// error: INVALID_ARGUMENT.
///
/// Every RPC of every clef service, each body no protobuf decoder accepts
/// (field 0, wire type 7, a length past the end, a cut varint, the wrong
/// wire type for the message's first field, a string that is not UTF-8),
/// with an operator's key: INVALID_ARGUMENT. Without a key: INVALID_ARGUMENT
/// or UNAUTHENTICATED (whichever the server looks at first). ImportUsers also
/// with valid options then a malformed chunk. The server goes on.
#[tokio::test]
async fn malformed_protobuf_bodies_are_invalid_argument_on_every_rpc() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "PB1").await;
    let channel = app.channel().await;
    let key = app.operator_key.clone();
    let mut wrong = Vec::new();
    let mut calls = 0;
    for rpc in rpcs() {
        for (case, body) in malformed(&rpc) {
            let code = send(&channel, Some(&key), &rpc.path, vec![body.clone()]).await;
            if code != Code::InvalidArgument {
                wrong.push(format!("{} {case}: {code:?}", rpc.path));
            }
            let code = send(&channel, None, &rpc.path, vec![body]).await;
            if !matches!(code, Code::InvalidArgument | Code::Unauthenticated) {
                wrong.push(format!("{} {case}, no key: {code:?}", rpc.path));
            }
            calls += 2;
        }
    }
    // Valid options, then a malformed chunk.
    for (case, body) in malformed(&Rpc {
        path: String::new(),
        field: Some((2, 2, false)),
    }) {
        let code = send(
            &channel,
            Some(&key),
            "/clef.v1.ImportService/ImportUsers",
            vec![import_options("PB1"), body],
        )
        .await;
        if code != Code::InvalidArgument {
            wrong.push(format!("ImportUsers, chunk {case}: {code:?}"));
        }
        calls += 1;
        // The import stopped: the account takes the next one.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    still_up(&app).await;
    assert!(
        wrong.is_empty(),
        "{} of {calls} calls not answered INVALID_ARGUMENT:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Regression test (the same as above: INTERNAL for bodies that do not decode).
///
/// Arbitrary bytes, and valid requests cut short, as the body of any RPC:
/// never INTERNAL or UNKNOWN, always an answer, and the server stays up.
#[test]
fn arbitrary_bodies_never_get_internal_or_unknown() {
    let rt = runtime();
    let app = rt.block_on(async {
        let app = spawn_app().await;
        org_with_account(&app, "Org", "PB2").await;
        app
    });
    let channel = rt.block_on(app.channel());
    let rpcs = rpcs();
    // A valid request of a few fields, to cut anywhere.
    let valid = pb::CheckRequest {
        subject: by_user_key("ABCD-EFGH-JKLM"),
        account_code: "PB2".into(),
        right: "shipping.ws".into(),
        min_revision: 7,
    }
    .encode_to_vec();
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        (0..valid.len()).prop_map(move |n| valid[..n].to_vec()),
    ];
    let strategy = (0..rpcs.len(), body);
    let key = app.operator_key.clone();
    runner(300)
        .run(&strategy, |(i, body)| {
            let code = rt.block_on(send(&channel, Some(&key), &rpcs[i].path, vec![body]));
            prop_assert!(
                !matches!(code, Code::Internal | Code::Unknown),
                "{}: {code:?}",
                rpcs[i].path
            );
            Ok(())
        })
        .unwrap();
    rt.block_on(still_up(&app));
}
