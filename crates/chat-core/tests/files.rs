//! File sharing through the engine: uploads in chunks, downloads, limits,
//! content sniffing, name sanitising, access through every route, and
//! nothing left behind by an upload that does not finish.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine as _;
use chat_core::{ClientFrame, Engine, ErrorCode, FileSettings, ServerFrame};
use support::{error_code, Client};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn png(len: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend((0..len - 8).map(|i| (i * 7 % 251) as u8));
    v
}

fn engine(dir: &std::path::Path, settings: impl FnOnce(FileSettings) -> FileSettings) -> Engine {
    Engine::builder()
        .limits(support::limits())
        .files(settings(FileSettings::new(dir).chunk_bytes(1000)))
        .build()
        .unwrap()
}

/// Uploads `data` as `name` in chunks; returns the final reply.
async fn upload(c: &mut Client, room: &str, name: &str, data: &[u8]) -> ServerFrame {
    let r = c
        .call(ClientFrame::UploadStart {
            room: room.into(),
            name: name.into(),
            size: data.len() as u64,
        })
        .await;
    let ServerFrame::UploadReady {
        upload,
        chunk_bytes,
        ..
    } = r
    else {
        return r;
    };
    for chunk in data.chunks(chunk_bytes) {
        let r = c
            .call(ClientFrame::UploadChunk {
                upload,
                data: B64.encode(chunk),
            })
            .await;
        if !matches!(r, ServerFrame::Ok { .. }) {
            return r;
        }
    }
    c.call(ClientFrame::UploadFinish {
        upload,
        body: "look at this".into(),
        client_id: None,
    })
    .await
}

async fn download(c: &mut Client, id: &str) -> Result<Vec<u8>, ServerFrame> {
    let mut out = Vec::new();
    loop {
        let r = c
            .call(ClientFrame::Download {
                file: id.into(),
                offset: out.len() as u64,
            })
            .await;
        let ServerFrame::FileChunk { data, eof, .. } = r else {
            return Err(r);
        };
        out.extend(B64.decode(data).unwrap());
        if eof {
            return Ok(out);
        }
    }
}

fn leftovers(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("tmp")).unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_share_and_download_round_trip_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), |s| s);
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    let mut bob = Client::signup(&e, "bob").await;
    bob.join("r").await;
    bob.subscribe("r", None).await;

    let data = png(5_500);
    let r = upload(&mut alice, "r", "holiday.png", &data).await;
    assert!(matches!(r, ServerFrame::Ack { seq: 1, .. }), "{r:?}");
    // The room sees a message sharing the file.
    let m = bob.next_message().await;
    let file = m.file.expect("the message shares a file");
    assert_eq!(
        (file.name.as_str(), file.size, file.mime.as_str()),
        ("holiday.png", 5_500, "image/png")
    );
    assert_eq!(m.body, "look at this");
    // Bob downloads it intact; it is listed.
    assert_eq!(download(&mut bob, &file.id).await.unwrap(), data);
    let ServerFrame::Files { files, .. } =
        bob.call(ClientFrame::ListFiles { room: "r".into() }).await
    else {
        panic!()
    };
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].uploader, "alice");
    // Stored once, by content hash, and no temporary file remains.
    assert_eq!(leftovers(dir.path()), 0);
    let rec = e.file_for("bob", &file.id).await.unwrap();
    assert_eq!(std::fs::read(e.file_path(&rec).unwrap()).unwrap(), data);
}

#[tokio::test]
async fn limits_types_and_names_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), |s| {
        s.max_file_bytes(4_000).user_quota_bytes(6_000)
    });
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;

    // Over the size limit: refused before a byte is sent.
    let r = upload(&mut alice, "r", "big.png", &png(4_001)).await;
    assert_eq!(error_code(&r), Some(ErrorCode::MessageTooLarge), "{r:?}");
    // A disallowed type by name.
    let r = upload(&mut alice, "r", "tool.exe", b"MZ\x90\0 program").await;
    assert_eq!(error_code(&r), Some(ErrorCode::Invalid), "{r:?}");
    // An executable disguised by its extension: refused by its content.
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(3_000, 0);
    let r = upload(&mut alice, "r", "cute-cat.png", &elf).await;
    assert_eq!(error_code(&r), Some(ErrorCode::Invalid), "{r:?}");
    // More bytes than declared.
    let r = alice
        .call(ClientFrame::UploadStart {
            room: "r".into(),
            name: "a.txt".into(),
            size: 3,
        })
        .await;
    let ServerFrame::UploadReady { upload: id, .. } = r else {
        panic!("{r:?}")
    };
    let r = alice
        .call(ClientFrame::UploadChunk {
            upload: id,
            data: B64.encode(b"toolong"),
        })
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::MessageTooLarge), "{r:?}");
    // A path in the name never reaches the file system.
    let r = upload(&mut alice, "r", "../../../etc/passwd.txt", b"root:x:0:0").await;
    assert!(matches!(r, ServerFrame::Ack { .. }), "{r:?}");
    let ServerFrame::Files { files, .. } = alice
        .call(ClientFrame::ListFiles { room: "r".into() })
        .await
    else {
        panic!()
    };
    assert_eq!(files[0].file.name, "passwd.txt");
    assert!(!dir.path().join("etc").exists());
    // The quota counts what was stored: 10 bytes so far, 5,990 left.
    let r = upload(&mut alice, "r", "photo.png", &png(3_000)).await;
    assert!(matches!(r, ServerFrame::Ack { .. }), "{r:?}");
    let r = upload(&mut alice, "r", "photo2.png", &png(3_000)).await;
    assert_eq!(error_code(&r), Some(ErrorCode::Forbidden), "{r:?}");
    // Every refusal left nothing behind.
    assert_eq!(leftovers(dir.path()), 0);
}

#[tokio::test]
async fn non_members_cannot_reach_a_private_file_by_any_route() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), |s| s);
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("secret", "private").await;
    let r = upload(&mut alice, "secret", "plan.pdf", b"%PDF-1.7 the plan").await;
    assert!(matches!(r, ServerFrame::Ack { .. }), "{r:?}");
    let ServerFrame::Files { files, .. } = alice
        .call(ClientFrame::ListFiles {
            room: "secret".into(),
        })
        .await
    else {
        panic!()
    };
    let id = files[0].file.id.clone();

    let mut eve = Client::signup(&e, "eve").await;
    let r = eve
        .call(ClientFrame::ListFiles {
            room: "secret".into(),
        })
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::NotFound));
    let r = download(&mut eve, &id).await.unwrap_err();
    assert_eq!(error_code(&r), Some(ErrorCode::NotFound));
    // Guessing ids gives the same answer as a real id she may not read.
    let r = download(&mut eve, "00000000000000000000000000000000")
        .await
        .unwrap_err();
    assert_eq!(error_code(&r), Some(ErrorCode::NotFound));
    assert_eq!(
        e.file_for("eve", &id).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    // Nor can she upload into the room.
    let r = upload(&mut eve, "secret", "x.txt", b"hi").await;
    assert_eq!(error_code(&r), Some(ErrorCode::NotFound));
    // A member can.
    assert_eq!(
        download(&mut alice, &id).await.unwrap(),
        b"%PDF-1.7 the plan"
    );
}

#[tokio::test]
async fn an_interrupted_upload_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), |s| s);
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    let data = png(3_000);
    let r = alice
        .call(ClientFrame::UploadStart {
            room: "r".into(),
            name: "x.png".into(),
            size: data.len() as u64,
        })
        .await;
    let ServerFrame::UploadReady { upload: id, .. } = r else {
        panic!("{r:?}")
    };
    alice
        .call(ClientFrame::UploadChunk {
            upload: id,
            data: B64.encode(&data[..1000]),
        })
        .await;
    assert_eq!(
        leftovers(dir.path()),
        1,
        "the partial upload is on disk while it runs"
    );
    // The client goes away mid-upload.
    drop(alice);
    assert_eq!(leftovers(dir.path()), 0);
    // And nothing was recorded: a fresh listing is empty.
    let mut bob = Client::signup(&e, "bob").await;
    let ServerFrame::Files { files, .. } =
        bob.call(ClientFrame::ListFiles { room: "r".into() }).await
    else {
        panic!()
    };
    assert!(files.is_empty());
    let ServerFrame::History { messages, .. } = bob
        .call(ClientFrame::History {
            room: "r".into(),
            before: None,
            after: None,
            limit: None,
        })
        .await
    else {
        panic!()
    };
    assert!(messages.is_empty());
}

#[tokio::test]
async fn without_a_vault_uploads_are_refused_clearly() {
    let e = support::engine();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    let r = upload(&mut alice, "r", "a.png", &png(100)).await;
    assert_eq!(error_code(&r), Some(ErrorCode::Invalid));
}

#[tokio::test]
async fn a_retried_upload_with_the_same_client_id_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), |s| s);
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    let data = png(2_000);
    let mut acks = Vec::new();
    for _ in 0..2 {
        let r = alice
            .call(ClientFrame::UploadStart {
                room: "r".into(),
                name: "x.png".into(),
                size: 2_000,
            })
            .await;
        let ServerFrame::UploadReady { upload: id, .. } = r else {
            panic!("{r:?}")
        };
        for chunk in data.chunks(1000) {
            alice
                .call(ClientFrame::UploadChunk {
                    upload: id,
                    data: B64.encode(chunk),
                })
                .await;
        }
        let r = alice
            .call(ClientFrame::UploadFinish {
                upload: id,
                body: String::new(),
                client_id: Some("up-1".into()),
            })
            .await;
        let ServerFrame::Ack { seq, duplicate, .. } = r else {
            panic!("{r:?}")
        };
        acks.push((seq, duplicate));
    }
    assert_eq!(acks, [(1, false), (1, true)]);
    let ServerFrame::Files { files, .. } = alice
        .call(ClientFrame::ListFiles { room: "r".into() })
        .await
    else {
        panic!()
    };
    assert_eq!(files.len(), 1);
    assert_eq!(e.store().bytes_uploaded_by("alice").await.unwrap(), 2_000);
}
