//! Every example frame in docs/protocol.md decodes with the real codec.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chat_core::Codec;

#[test]
fn protocol_doc_examples_decode() {
    let doc = include_str!("../../../docs/protocol.md");
    let (mut clients, mut servers) = (0, 0);
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let side = match line.trim() {
            "```json client" => "client",
            "```json server" => "server",
            _ => continue,
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let json = body.join("\n");
        if side == "client" {
            Codec::new(1 << 16)
                .decode_str(&json)
                .unwrap_or_else(|e| panic!("client example {json}: {e}"));
            clients += 1;
        } else {
            Codec::decode_server(json.as_bytes())
                .unwrap_or_else(|e| panic!("server example {json}: {e}"));
            servers += 1;
        }
    }
    // Every client request type and the main server frames are shown.
    assert!(clients >= 23, "{clients} client examples");
    assert!(servers >= 20, "{servers} server examples");
}
