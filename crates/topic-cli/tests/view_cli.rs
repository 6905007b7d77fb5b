//! `topic-cli view eval`: the offline view evaluator, run as a real process.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn view_eval(spec: &str, topics_json: &str) -> Output {
    let dir = std::env::temp_dir().join(format!("view-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(format!("{:x}.json", rand_suffix(spec, topics_json)));
    std::fs::File::create(&file)
        .and_then(|mut f| f.write_all(topics_json.as_bytes()))
        .expect("write topics file");
    let output = Command::new(env!("CARGO_BIN_EXE_topic-cli"))
        .args(["view", "eval", "--spec", spec, "--topics"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .expect("run topic-cli");
    let _ = std::fs::remove_file(&file);
    output
}

fn rand_suffix(a: &str, b: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (a, b).hash(&mut h);
    h.finish()
}

#[test]
fn prints_reference_topics_as_one_sorted_object() {
    let out = view_eval(
        "map ?a// to b/<path(1)> process {if '/p gt 1' continue}",
        r#"{"a/z":{"p":5},"a/y":{"p":0},"a/x":{"p":2,"q":{"b":1,"a":2}}}"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"b/x\":{\"p\":2,\"q\":{\"a\":2,\"b\":1}},\"b/z\":{\"p\":5}}\n"
    );
}

#[test]
fn throttle_and_delay_are_accepted_offline() {
    let out = view_eval(
        "map a to b throttle to 1 update every second delay by 2 seconds",
        r#"{"a":1}"#,
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\"b\":1}\n");
}

#[test]
fn invalid_spec_exits_2_with_line_column_and_caret() {
    let out = view_eval("map ?a//\n  to b/<path(x)>", r#"{"a":1}"#);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("2:"), "{stderr}");
    assert!(stderr.contains('^'), "{stderr}");
    assert!(stderr.contains("to b/<path(x)>"), "{stderr}");
}

#[test]
fn bad_topics_file_exits_2() {
    for topics in ["[1,2]", "not json", r#"{"a//b":1}"#] {
        let out = view_eval("map a to b", topics);
        assert_eq!(out.status.code(), Some(2), "{topics}");
        assert!(!out.stderr.is_empty());
    }
}
