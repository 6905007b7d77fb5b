//! WebSocket framing, just what the limit server needs: unmasked text frames it writes (one
//! message, or several packed with `\n` between them) and a tiny incremental reader for what
//! subscribers send (masked frames; only a close matters), so an idle connection holds no
//! buffer.

use bytes::{BufMut, Bytes, BytesMut};

/// Longest server frame header: 2 bytes, then an 8-byte length.
pub const MAX_HEADER: usize = 10;

/// The close frame the server sends (no status code: "no status").
pub const CLOSE_FRAME: &[u8] = &[0x88, 0x00];

const SEPARATOR: Bytes = Bytes::from_static(b"\n");

/// Writes the header of an unmasked, final text frame carrying `len` payload bytes into
/// `out`; returns how many bytes it used (2, 4 or 10).
pub fn encode_text_header(len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    out[0] = 0x81;
    if len <= 125 {
        // Fits in the 7-bit length: checked just above.
        out[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// One published message, framed once and shared by every subscriber it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Header and payload, ready to write as they are.
    bytes: Bytes,
    /// Length of the header at the front of `bytes`.
    header: u8,
}

impl Frame {
    /// Frames `payload` as one text frame (one copy of the payload, made once per message).
    pub fn text(payload: &[u8]) -> Self {
        let mut header = [0; MAX_HEADER];
        let header_len = encode_text_header(payload.len(), &mut header);
        let mut bytes = BytesMut::with_capacity(header_len + payload.len());
        bytes.put_slice(&header[..header_len]);
        bytes.put_slice(payload);
        Self {
            bytes: bytes.freeze(),
            // At most MAX_HEADER.
            header: header_len as u8,
        }
    }

    /// The whole frame.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The payload alone (shares the frame's memory).
    pub fn payload(&self) -> Bytes {
        self.bytes.slice(usize::from(self.header)..)
    }

    /// Payload length in bytes.
    pub fn payload_len(&self) -> usize {
        self.bytes.len() - usize::from(self.header)
    }
}

/// Appends `frames` to `out` as wire segments, packing consecutive messages into one text frame
/// (`\n` between payloads) as long as its payload stays within `max_frame_bytes`; a message
/// alone, or one larger than the limit, goes as its own pre-built frame. No payload is copied:
/// the segments share the messages' memory, ready for one vectored write.
pub fn pack<'a>(
    frames: impl IntoIterator<Item = &'a Frame>,
    max_frame_bytes: usize,
    out: &mut Vec<Bytes>,
) {
    let mut group: Vec<&Frame> = Vec::new();
    let mut group_len = 0;
    for frame in frames {
        let len = frame.payload_len();
        if !group.is_empty() && group_len + 1 + len > max_frame_bytes {
            emit(&group, group_len, out);
            group.clear();
        }
        group_len = if group.is_empty() {
            len
        } else {
            group_len + 1 + len
        };
        group.push(frame);
    }
    emit(&group, group_len, out);
}

fn emit(group: &[&Frame], payload_len: usize, out: &mut Vec<Bytes>) {
    match group {
        [] => {}
        [one] => out.push(one.bytes.clone()),
        [first, rest @ ..] => {
            let mut header = [0; MAX_HEADER];
            let header_len = encode_text_header(payload_len, &mut header);
            out.push(Bytes::copy_from_slice(&header[..header_len]));
            out.push(first.payload());
            for frame in rest {
                out.push(SEPARATOR);
                out.push(frame.payload());
            }
        }
    }
}

/// What a subscriber's bytes amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// Nothing that needs an answer (data, pings, pongs, or an incomplete frame).
    Nothing,
    /// A close frame: answer it and close.
    Close,
    /// Not WebSocket as a client speaks it (an unmasked frame, a bad length): drop the client.
    ProtocolError,
}

/// Reads the frames a client sends, a few bytes at a time, keeping only the header being read
/// and how much payload is left to skip (payloads are never kept).
#[derive(Debug, Default)]
pub struct ClientFrames {
    header: [u8; 14],
    have: u8,
    skip: u64,
}

impl ClientFrames {
    /// Consumes `data`; stops at the first close frame or protocol error.
    pub fn feed(&mut self, mut data: &[u8]) -> Incoming {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            let have = usize::from(self.have);
            let need = self.header_len();
            let n = (need - have).min(data.len());
            self.header[have..have + n].copy_from_slice(&data[..n]);
            self.have += n as u8;
            data = &data[n..];
            if usize::from(self.have) < self.header_len() {
                continue;
            }
            match self.finish_header() {
                Incoming::Nothing => {}
                other => return other,
            }
        }
        Incoming::Nothing
    }

    /// Header bytes needed, as far as the ones read so far tell.
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    fn finish_header(&mut self) -> Incoming {
        let opcode = self.header[0] & 0x0f;
        let masked = self.header[1] & 0x80 != 0;
        let len = match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut eight = [0; 8];
                eight.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(eight)
            }
            short => u64::from(short),
        };
        self.have = 0;
        if !masked || len > i64::MAX as u64 || (opcode >= 8 && len > 125) {
            return Incoming::ProtocolError;
        }
        if opcode == 0x8 {
            return Incoming::Close;
        }
        self.skip = len;
        Incoming::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: usize) -> Vec<u8> {
        let mut out = [0; MAX_HEADER];
        let n = encode_text_header(len, &mut out);
        out[..n].to_vec()
    }

    #[test]
    fn header_lengths_at_the_boundaries() {
        assert_eq!(header(0), [0x81, 0]);
        assert_eq!(header(125), [0x81, 125]);
        assert_eq!(header(126), [0x81, 126, 0, 126]);
        assert_eq!(header(65535), [0x81, 126, 0xff, 0xff]);
        assert_eq!(header(65536), [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    /// tungstenite reads what we write as the same text message.
    #[test]
    fn frames_parse_as_text_messages() {
        use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
        for len in [0, 1, 125, 126, 65535, 65536] {
            let payload = vec![b'x'; len];
            let frame = Frame::text(&payload);
            let mut cursor = std::io::Cursor::new(frame.bytes().to_vec());
            let (parsed, parsed_len) = FrameHeader::parse(&mut cursor)
                .expect("valid header")
                .expect("complete header");
            assert!(parsed.is_final);
            assert!(parsed.mask.is_none());
            assert_eq!(parsed_len, len as u64);
            assert_eq!(frame.payload(), payload);
            assert_eq!(frame.payload_len(), len);
        }
    }

    fn wire(segments: &[Bytes]) -> Vec<u8> {
        segments.iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn packing_joins_messages_up_to_the_frame_limit() {
        let frames: Vec<Frame> = ["aa", "bb", "cc", "0123456789"]
            .iter()
            .map(|p| Frame::text(p.as_bytes()))
            .collect();
        let mut out = Vec::new();
        pack(&frames, 8, &mut out);
        let mut expected = vec![0x81, 8];
        expected.extend_from_slice(b"aa\nbb\ncc");
        // Too large to share a frame: goes alone, as it was framed.
        expected.extend_from_slice(frames[3].bytes());
        assert_eq!(wire(&out), expected);

        out.clear();
        pack(&frames[..1], 8, &mut out);
        assert_eq!(out, vec![frames[0].bytes().clone()]);
        out.clear();
        pack(&[], 8, &mut out);
        assert!(out.is_empty());
    }

    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [1, 2, 3, 4];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn client_frames_are_skipped_until_a_close() {
        let mut bytes = masked(0x1, &vec![b'a'; 70_000]);
        bytes.extend(masked(0x9, b"ping"));
        bytes.extend(masked(0x1, &[b'b'; 200]));
        bytes.extend(masked(0x8, &[0x03, 0xe8]));
        // Byte by byte, and all at once.
        let mut reader = ClientFrames::default();
        let close_at = bytes
            .iter()
            .position(|b| reader.feed(std::slice::from_ref(b)) == Incoming::Close);
        assert_eq!(close_at, Some(bytes.len() - 3));
        let mut reader = ClientFrames::default();
        assert_eq!(reader.feed(&bytes), Incoming::Close);
        let mut reader = ClientFrames::default();
        assert_eq!(reader.feed(&bytes[..bytes.len() - 8]), Incoming::Nothing);
    }

    #[test]
    fn unmasked_or_oversized_control_frames_are_refused() {
        let mut reader = ClientFrames::default();
        assert_eq!(reader.feed(&[0x81, 0x01, b'a']), Incoming::ProtocolError);
        let mut reader = ClientFrames::default();
        assert_eq!(
            reader.feed(&[0x89, 0x80 | 126, 0, 200, 0, 0, 0, 0]),
            Incoming::ProtocolError
        );
        let mut reader = ClientFrames::default();
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(reader.feed(&huge), Incoming::ProtocolError);
    }
}
