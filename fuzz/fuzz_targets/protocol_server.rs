//! `decode_server_frame` / `split_frame` on arbitrary UTF-8. Every message decoded from a frame
//! must survive `encode_server_message` + `decode_server_message` unchanged; the frame decoder
//! must agree with decoding the split messages one by one; `pack_frames` of the re-encoded
//! messages must decode to the same messages; `encode_fetched` must give the same bytes as
//! `encode_server_message` for a `fetched` reply.
#![no_main]

use bytes::Bytes;
use diffusion_core::protocol::{
    FetchedRaw, ServerMessage, decode_server_frame, decode_server_message, encode_fetched,
    encode_server_message, pack_frames, split_frame,
};
use libfuzzer_sys::{Corpus, fuzz_target};

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(frame) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    let one_by_one: Vec<Result<ServerMessage, String>> = split_frame(frame)
        .map(|m| decode_server_message(m).map_err(|e| e.to_string()))
        .collect();
    let messages = match decode_server_frame(frame) {
        Ok(messages) => messages,
        Err(_) => {
            assert!(
                one_by_one.iter().any(Result::is_err),
                "decode_server_frame failed but every split message decodes: {frame:?}"
            );
            return Corpus::Keep;
        }
    };
    let expected: Vec<ServerMessage> = one_by_one
        .into_iter()
        .map(|m| m.expect("checked"))
        .collect();
    assert_eq!(
        messages, expected,
        "frame decoder disagrees with split_frame: {frame:?}"
    );

    let mut encoded = Vec::with_capacity(messages.len());
    for message in &messages {
        let bytes = encode_server_message(message);
        let text = std::str::from_utf8(&bytes).expect("encoded server messages are UTF-8");
        assert!(
            !text.contains('\n'),
            "encoded message contains a raw newline: {text:?}"
        );
        let again = decode_server_message(text).unwrap_or_else(|e| {
            panic!(
                "encoded server message does not decode: {e}\nframe:   {frame:?}\nencoded: {text:?}"
            )
        });
        assert_eq!(
            &again, message,
            "server message does not round-trip\nframe:   {frame:?}\nencoded: {text:?}"
        );
        if let ServerMessage::Fetched { cid, topics, more } = message {
            let raw: Vec<FetchedRaw> = topics
                .iter()
                .map(|t| FetchedRaw {
                    path: t.path.clone(),
                    topic_type: t.topic_type,
                    wire_value: t
                        .value
                        .as_ref()
                        .map(|v| Bytes::from(serde_json::to_vec(v).expect("a Value serialises"))),
                })
                .collect();
            assert_eq!(
                encode_fetched(*cid, &raw, *more),
                bytes,
                "encode_fetched differs from encode_server_message for {frame:?}"
            );
        }
        encoded.push(bytes);
    }

    // Pack the re-encoded messages with a frame limit taken from the input's length.
    let limit = 1 + data.len() % 257;
    let frames = pack_frames(encoded.clone(), limit);
    let mut unpacked = Vec::new();
    for packed in &frames {
        let text = std::str::from_utf8(packed).expect("frames are UTF-8");
        let decoded = decode_server_frame(text).expect("a packed frame decodes");
        assert!(
            packed.len() <= limit || decoded.len() == 1,
            "a frame of {} bytes (limit {limit}) packs {} messages",
            packed.len(),
            decoded.len()
        );
        unpacked.extend(decoded);
    }
    assert_eq!(
        unpacked, messages,
        "pack_frames lost or changed messages for {frame:?}"
    );
    Corpus::Keep
});
