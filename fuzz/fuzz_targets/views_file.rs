//! `parse_views_file` on arbitrary UTF-8. A file that loads has unique one-word names, and
//! writing its entries back as `NAME: SPEC` lines loads again to the same entries (unless a
//! spec holds a `\r` before a line break, which reading drops as CRLF); a file that
//! does not load names a line of the file.
#![no_main]

use diffusion_core::view::parse_views_file;
use libfuzzer_sys::{Corpus, fuzz_target};

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    match parse_views_file("fuzz.txt", text) {
        Ok(views) => {
            let mut names: Vec<&str> = views.iter().map(|(n, _)| n.as_str()).collect();
            for name in &names {
                assert!(
                    !name.is_empty() && !name.contains(char::is_whitespace) && !name.contains(':'),
                    "bad view name {name:?} from {text:?}"
                );
            }
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), views.len(), "duplicate names from {text:?}");
            // Write the file back: a spec's continuation lines still start with whitespace. A
            // `\r` before a line break cannot be written back (reading drops it as CRLF), and
            // that includes a spec ending in `\r` at the end of the file, which the written
            // form follows with `\n`.
            if views.iter().any(|(_, spec)| spec.as_str().contains('\r')) {
                return Corpus::Keep;
            }
            let written: String = views
                .iter()
                .map(|(name, spec)| format!("{name}: {}\n", spec.as_str()))
                .collect();
            let again = parse_views_file("fuzz.txt", &written).unwrap_or_else(|e| {
                panic!(
                    "written-back file does not load: {e}\ninput:   {text:?}\nwritten: {written:?}"
                )
            });
            assert_eq!(
                again, views,
                "written-back file differs\ninput:   {text:?}\nwritten: {written:?}"
            );
        }
        Err(error) => {
            let lines = text.lines().count().max(1);
            assert!(
                (1..=lines).contains(&error.line),
                "error line {} outside 1..={lines} for {text:?}",
                error.line
            );
            assert_eq!(error.file, "fuzz.txt");
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("fuzz.txt:{}: ", error.line))
            );
        }
    }
    Corpus::Keep
});
