//! Reading a Prometheus text exposition (what `/metrics` serves): the tools that watch the
//! platform's processes (the soak, the hostile-input suite) read their gauges and counters
//! through this one parser.

/// The sum of every series of metric `name` in a Prometheus text exposition (all label sets);
/// `None` when it has none.
pub fn sum_of(body: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // The name must end here: `name 3` or `name{…} 3`, not `name_total 3`.
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest
            .rsplit_once('}')
            .map_or(rest, |(_, value)| value)
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(value) = value {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_their_labels() {
        let body = "# HELP topic_server_queued_bytes bytes\n\
                    # TYPE topic_server_queued_bytes gauge\n\
                    topic_server_queued_bytes 1024\n\
                    topic_server_queued_bytes_max 9\n\
                    topic_server_connections{protocol=\"2\"} 30\n\
                    topic_server_connections{protocol=\"1\"} 12 1700000000\n";
        assert_eq!(sum_of(body, "topic_server_queued_bytes"), Some(1024.0));
        assert_eq!(sum_of(body, "topic_server_connections"), Some(42.0));
        assert_eq!(sum_of(body, "topic_server_topics"), None);
    }
}
