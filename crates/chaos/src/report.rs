//! The result of a chaos run as a Markdown table, printed and written to a file so that
//! docs/reliability.md can reproduce it.

use std::fmt::Write as _;
use std::time::Duration;

/// One fault and what followed it.
#[derive(Debug, Clone)]
pub struct Row {
    /// The fault's number in the run.
    pub number: usize,
    /// What was done (`kill -9, restart`, `SIGSTOP 3 s, SIGCONT`).
    pub fault: String,
    /// The process it was done to.
    pub tier: String,
    /// From the end of the fault to the first new value (`None`: none within the bound, or no
    /// fault: the final check).
    pub recovery: Option<Duration>,
    /// The longest time between new values around the fault.
    pub longest_gap: Duration,
    /// `None` when every check held, else what did not.
    pub failure: Option<String>,
}

/// Renders rows as a Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| # | fault | tier | recovery | longest gap | result |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let recovery = match (row.recovery, &row.failure) {
            (Some(d), _) => format!("{} ms", d.as_millis()),
            (None, Some(_)) => "none".to_owned(),
            // Nothing to recover from (the final check), and nothing failed.
            (None, None) => "—".to_owned(),
        };
        let result = match &row.failure {
            None => "pass".to_owned(),
            Some(why) => format!("**FAIL**: {}", why.replace('|', "\\|").replace('\n', " ")),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} ms | {} |",
            row.number,
            row.fault,
            row.tier,
            recovery,
            row.longest_gap.as_millis(),
            result
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_per_fault_with_its_result() {
        let rows = [
            Row {
                number: 1,
                fault: "kill -9, restart".into(),
                tier: "redis-server".into(),
                recovery: Some(Duration::from_millis(812)),
                longest_gap: Duration::from_millis(1_010),
                failure: None,
            },
            Row {
                number: 2,
                fault: "SIGSTOP 3 s, SIGCONT".into(),
                tier: "backend-app".into(),
                recovery: None,
                longest_gap: Duration::from_secs(8),
                failure: Some("no new value | within 5 s".into()),
            },
            Row {
                number: 3,
                fault: "none".into(),
                tier: "all".into(),
                recovery: None,
                longest_gap: Duration::from_millis(200),
                failure: None,
            },
        ];
        let table = markdown(&rows);
        assert!(
            table.contains("| 1 | kill -9, restart | redis-server | 812 ms | 1010 ms | pass |")
        );
        assert!(table.contains("| 3 | none | all | — | 200 ms | pass |"));
        assert!(table.contains("| 2 | SIGSTOP 3 s, SIGCONT | backend-app | none | 8000 ms | **FAIL**: no new value \\| within 5 s |"));
    }
}
