//! File sharing over the TLS TCP transport: chunked upload and download
//! byte for byte, and what the server refuses (size, disguised type,
//! downloads by non-members).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use chat_core::{ClientFrame, Cursor, ErrorCode, FileRef, ServerFrame};
use chat_transport_tcp::client::Client;
use chat_transport_tcp::{files, TcpSettings};
use support::*;

/// A server whose engine shares files of at most `max` bytes.
async fn server(max: u64) -> (TestServer, tempfile::TempDir) {
    let vault = tempfile::tempdir().unwrap();
    let engine = engine_with_files(vault.path(), max);
    (
        TestServer::with_engine(engine, TcpSettings::default()).await,
        vault,
    )
}

/// `size` bytes that sniff as PNG: the signature, then a pattern no
/// shorter than a few chunks would repeat within.
fn png(size: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut x: u32 = 0x1234_5678;
    while bytes.len() < size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push(x as u8);
    }
    bytes.truncate(size);
    bytes
}

async fn create_room(c: &mut Client, room: &str, kind: &str) {
    let frame = ClientFrame::CreateRoom {
        room: room.into(),
        kind: kind.into(),
        topic: String::new(),
    };
    let reply = call(c, 2, frame).await;
    assert!(matches!(reply, ServerFrame::Room { .. }), "{reply:?}");
}

/// Starts an upload; its handle and chunk size, or the error code.
async fn start(
    c: &mut Client,
    room: &str,
    name: &str,
    size: u64,
) -> Result<(u64, usize), ErrorCode> {
    let frame = ClientFrame::UploadStart {
        room: room.into(),
        name: name.into(),
        size,
    };
    match call(c, 10, frame).await {
        ServerFrame::UploadReady {
            upload,
            chunk_bytes,
            ..
        } => Ok((upload, chunk_bytes)),
        ServerFrame::Error { code, .. } => Err(code),
        other => panic!("unexpected {other:?}"),
    }
}

/// Sends every chunk at once (the server answers them in order), then
/// reads the answers; the first error's code, if any.
async fn send_chunks(
    c: &mut Client,
    upload: u64,
    bytes: &[u8],
    chunk: usize,
) -> Result<(), ErrorCode> {
    let chunks: Vec<&[u8]> = bytes.chunks(chunk).collect();
    for (i, piece) in chunks.iter().enumerate() {
        let id = 100 + i as u64;
        c.send(&req(id, files::upload_chunk(upload, piece)))
            .await
            .unwrap();
    }
    let mut first_error = None;
    for i in 0..chunks.len() {
        let id = 100 + i as u64;
        match expect(c, "chunk reply", |f| reply_id(f) == Some(id)).await {
            ServerFrame::Ok { .. } => {}
            ServerFrame::Error { code, .. } => {
                first_error.get_or_insert(code);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Uploads `bytes` as `name` with a caption; the ack's `seq`.
async fn upload(c: &mut Client, room: &str, name: &str, bytes: &[u8], caption: &str) -> u64 {
    let (upload, chunk) = start(c, room, name, bytes.len() as u64).await.unwrap();
    assert!(chunk > 0);
    send_chunks(c, upload, bytes, chunk).await.unwrap();
    let finish = ClientFrame::UploadFinish {
        upload,
        body: caption.into(),
        client_id: Some("up-1".into()),
    };
    match call(c, 20, finish).await {
        ServerFrame::Ack { seq, .. } => seq,
        other => panic!("unexpected {other:?}"),
    }
}

/// Downloads a whole file by offsets; its description and bytes, or the
/// error code of the first request.
async fn download(c: &mut Client, id: &str) -> Result<(FileRef, Vec<u8>), ErrorCode> {
    let mut out = Vec::new();
    for n in 0.. {
        let frame = ClientFrame::Download {
            file: id.into(),
            offset: out.len() as u64,
        };
        match call(c, 1000 + n, frame).await {
            ServerFrame::FileChunk {
                file,
                offset,
                data,
                eof,
                ..
            } => {
                assert_eq!(offset, out.len() as u64);
                out.extend(files::decode_chunk(&data).unwrap());
                assert!(out.len() as u64 <= file.size);
                if eof {
                    return Ok((file, out));
                }
            }
            ServerFrame::Error { code, .. } => return Err(code),
            other => panic!("unexpected {other:?}"),
        }
    }
    unreachable!()
}

#[tokio::test]
async fn upload_and_download_round_trip_byte_for_byte() {
    let (server, _vault) = server(1024 * 1024).await;
    let mut alice = signed_up(&server, "alice").await;
    create_room(&mut alice, "share", "public").await;
    let mut bob = signed_up(&server, "bob").await;
    let joined = call(
        &mut bob,
        2,
        ClientFrame::Join {
            room: "share".into(),
        },
    )
    .await;
    assert!(matches!(joined, ServerFrame::Room { .. }), "{joined:?}");
    let sub = ClientFrame::Subscribe {
        rooms: vec![Cursor {
            room: "share".into(),
            last_seq: Some(0),
        }],
    };
    call(&mut bob, 3, sub).await;

    let bytes = png(300 * 1024 + 17);
    let seq = upload(&mut alice, "share", "../diagram.png", &bytes, "the diagram").await;

    // Bob sees the message that shares it, with a sanitised name.
    let shared = expect(
        &mut bob,
        "the file message",
        |f| matches!(f, ServerFrame::Message { message } if message.seq == seq),
    )
    .await;
    let ServerFrame::Message { message } = shared else {
        unreachable!()
    };
    assert_eq!(message.body, "the diagram");
    let file = message.file.expect("the message carries the file");
    assert_eq!(
        (file.name.as_str(), file.size, file.mime.as_str()),
        ("diagram.png", bytes.len() as u64, "image/png")
    );

    let (got_ref, got) = download(&mut bob, &file.id).await.unwrap();
    assert_eq!(got_ref, file);
    assert!(got == bytes, "downloaded bytes differ from the upload");

    // A download can start anywhere (resume after a reconnect).
    let mid = ClientFrame::Download {
        file: file.id.clone(),
        offset: 100_000,
    };
    let ServerFrame::FileChunk { data, .. } = call(&mut bob, 50, mid).await else {
        panic!("no chunk")
    };
    let piece = files::decode_chunk(&data).unwrap();
    assert_eq!(piece, bytes[100_000..100_000 + piece.len()]);

    let listed = call(
        &mut bob,
        51,
        ClientFrame::ListFiles {
            room: "share".into(),
        },
    )
    .await;
    let ServerFrame::Files { files, .. } = listed else {
        panic!("{listed:?}")
    };
    assert_eq!(files.len(), 1);
    assert_eq!(
        (files[0].file.clone(), files[0].uploader.as_str()),
        (file, "alice")
    );
    drop((alice, bob));
    server.stop().await;
}

#[tokio::test]
async fn a_file_over_the_limit_is_refused_up_front_and_on_the_wire() {
    let (server, _vault) = server(64 * 1024).await;
    let mut alice = signed_up(&server, "alice").await;
    create_room(&mut alice, "share", "public").await;

    let too_big = start(&mut alice, "share", "big.png", 64 * 1024 + 1).await;
    assert_eq!(too_big, Err(ErrorCode::MessageTooLarge));

    // Declaring less than is sent does not get past the limit either.
    let (upload, chunk) = start(&mut alice, "share", "small.png", 1000).await.unwrap();
    let err = send_chunks(&mut alice, upload, &png(chunk.min(4000)), chunk).await;
    assert_eq!(err, Err(ErrorCode::MessageTooLarge));
    // The upload is over: finishing it finds nothing.
    let finish = ClientFrame::UploadFinish {
        upload,
        body: String::new(),
        client_id: None,
    };
    let reply = call(&mut alice, 30, finish).await;
    assert!(
        matches!(
            reply,
            ServerFrame::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{reply:?}"
    );
    drop(alice);
    server.stop().await;
}

#[tokio::test]
async fn a_disguised_file_is_refused_and_nothing_is_shared() {
    let (server, vault) = server(1024 * 1024).await;
    let mut alice = signed_up(&server, "alice").await;
    create_room(&mut alice, "share", "public").await;

    // A Windows executable named like a PDF.
    let mut exe = b"MZ\x90\x00\x03\x00\x00\x00".to_vec();
    exe.resize(5000, 0);
    let (upload, chunk) = start(&mut alice, "share", "invoice.pdf", exe.len() as u64)
        .await
        .unwrap();
    let err = send_chunks(&mut alice, upload, &exe, chunk).await;
    assert_eq!(err, Err(ErrorCode::Invalid));

    // A PNG named as text is refused as well.
    let image = png(3000);
    let (upload, chunk) = start(&mut alice, "share", "notes.txt", image.len() as u64)
        .await
        .unwrap();
    assert_eq!(
        send_chunks(&mut alice, upload, &image, chunk).await,
        Err(ErrorCode::Invalid)
    );

    // An extension that is not allowed at all is refused at the start.
    assert_eq!(
        start(&mut alice, "share", "setup.exe", 100).await,
        Err(ErrorCode::Invalid)
    );

    let listed = call(
        &mut alice,
        40,
        ClientFrame::ListFiles {
            room: "share".into(),
        },
    )
    .await;
    assert!(
        matches!(&listed, ServerFrame::Files { files, .. } if files.is_empty()),
        "{listed:?}"
    );
    // Nothing partial stays in the vault's temporary folder.
    let left = std::fs::read_dir(vault.path().join("tmp")).unwrap().count();
    assert_eq!(left, 0, "partial uploads left behind");
    drop(alice);
    server.stop().await;
}

#[tokio::test]
async fn a_non_member_cannot_download_or_list_a_private_rooms_files() {
    let (server, _vault) = server(1024 * 1024).await;
    let mut alice = signed_up(&server, "alice").await;
    create_room(&mut alice, "secret", "private").await;
    let text = b"the launch date is friday\n".repeat(40);
    upload(&mut alice, "secret", "plan.txt", &text, "").await;
    let listed = call(
        &mut alice,
        41,
        ClientFrame::ListFiles {
            room: "secret".into(),
        },
    )
    .await;
    let ServerFrame::Files { files, .. } = listed else {
        panic!("{listed:?}")
    };
    let id = files[0].file.id.clone();
    assert_eq!(files[0].file.mime, "text/plain");
    assert_eq!(download(&mut alice, &id).await.unwrap().1, text);

    let mut carol = signed_up(&server, "carol").await;
    // Indistinguishable from a file that does not exist.
    assert_eq!(download(&mut carol, &id).await, Err(ErrorCode::NotFound));
    assert_eq!(
        download(&mut carol, &"0".repeat(32)).await,
        Err(ErrorCode::NotFound)
    );
    let listed = call(
        &mut carol,
        42,
        ClientFrame::ListFiles {
            room: "secret".into(),
        },
    )
    .await;
    assert!(
        matches!(listed, ServerFrame::Error { .. }),
        "a non-member listed the files: {listed:?}"
    );
    drop((alice, carol));
    server.stop().await;
}
