//! Who gets what: a subscriber's interest from its request URI (`/` for everything,
//! `/?topics=T1,T2` for some topics), and a published frame split into its topic and payload.

use bytes::Bytes;

/// What a subscriber asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interest {
    /// No topics list: every message, with or without a topic.
    All,
    /// Only messages published on these topics (each once, in the order asked).
    Topics(Vec<Bytes>),
}

/// The interest a request URI's query expresses: the `topics` parameter, comma-separated,
/// each name percent-decoded (empty names are ignored). Anything else in the query is ignored.
pub fn interest(query: Option<&str>) -> Interest {
    let Some(value) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("topics="))
    else {
        return Interest::All;
    };
    let mut topics: Vec<Bytes> = Vec::new();
    for name in value.split(',').filter(|n| !n.is_empty()) {
        let name = Bytes::from(percent_decode(name));
        if !topics.contains(&name) {
            topics.push(name);
        }
    }
    Interest::Topics(topics)
}

/// `%XX` sequences decoded to their byte; a `%` not followed by two hex digits stays as it is.
pub fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match escaped {
            Some((high, low)) => {
                out.push(high << 4 | low);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// A published frame's topic (before the first `\n`) and payload (after it); a frame without
/// `\n` is all payload, for the subscribers without a topics list.
pub fn split_published(frame: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match frame.iter().position(|&b| b == b'\n') {
        Some(at) => (Some(&frame[..at]), &frame[at + 1..]),
        None => (None, frame),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> Interest {
        Interest::Topics(
            names
                .iter()
                .map(|n| Bytes::copy_from_slice(n.as_bytes()))
                .collect(),
        )
    }

    #[test]
    fn no_topics_list_is_everything() {
        assert_eq!(interest(None), Interest::All);
        assert_eq!(interest(Some("")), Interest::All);
        assert_eq!(interest(Some("other=1")), Interest::All);
    }

    #[test]
    fn topics_are_comma_separated_and_percent_decoded() {
        assert_eq!(interest(Some("topics=a,b")), topics(&["a", "b"]));
        assert_eq!(
            interest(Some("x=1&topics=md%2FAAPL,a%2Cb,,md%2FAAPL&y=2")),
            topics(&["md/AAPL", "a,b"])
        );
        assert_eq!(interest(Some("topics=")), topics(&[]));
        assert_eq!(
            interest(Some("topics=%E2%82%AC,%zz,%4")),
            topics(&["€", "%zz", "%4"])
        );
    }

    #[test]
    fn published_frames_split_at_the_first_newline() {
        assert_eq!(split_published(b"t\np\nq"), (Some(&b"t"[..]), &b"p\nq"[..]));
        assert_eq!(split_published(b"all"), (None, &b"all"[..]));
        assert_eq!(split_published(b"\n"), (Some(&b""[..]), &b""[..]));
    }
}
