//! `decode_client_message` on arbitrary UTF-8: it must never panic, and a message it accepts
//! must survive re-encoding with serde_json and decoding again unchanged (floats included:
//! `fuzz/regressions/protocol_client/set-float-drift` is a number whose printed form once parsed
//! back one ULP off).
#![no_main]

use diffusion_core::protocol::{ClientMessage, decode_client_message};
use libfuzzer_sys::{Corpus, fuzz_target};

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    let message: ClientMessage = match decode_client_message(text) {
        Ok(message) => message,
        Err((cid, error)) => {
            // Error reporting must not panic either.
            let _ = (cid, error.code(1), error.code(2), error.to_string());
            return Corpus::Keep;
        }
    };
    let _ = message.cid();
    let encoded = serde_json::to_string(&message).expect("a decoded client message re-encodes");
    let again = decode_client_message(&encoded).unwrap_or_else(|(cid, e)| {
        panic!("re-encoded message does not decode (cid {cid:?}): {e}\ninput:   {text:?}\nencoded: {encoded:?}")
    });
    assert_eq!(
        again, message,
        "client message does not round-trip\ninput:   {text:?}\nencoded: {encoded:?}"
    );
    Corpus::Keep
});
