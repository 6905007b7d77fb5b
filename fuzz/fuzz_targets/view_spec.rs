//! `ViewSpec::parse` on arbitrary UTF-8. A specification that parses keeps its text exactly
//! (`as_str()` and `to_string()` are the input) and parses again to an equal spec; one that
//! does not gives an error whose rendering (`line:column: message`, source line, caret) does not
//! panic and points inside the text (its column within the shown source line).
#![no_main]

use diffusion_core::Selector;
use diffusion_core::view::ViewSpec;
use libfuzzer_sys::{Corpus, fuzz_target};

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    match ViewSpec::parse(text) {
        Ok(spec) => {
            assert_eq!(spec.as_str(), text, "as_str() differs from the input");
            assert_eq!(spec.to_string(), text, "to_string() differs from the input");
            let again = ViewSpec::parse(spec.as_str()).expect("a parsed spec parses again");
            assert_eq!(
                again, spec,
                "re-parsing gives a different spec for {text:?}"
            );
            let source = Selector::parse(spec.source.as_str()).unwrap_or_else(|e| {
                panic!(
                    "source selector {:?} does not parse alone: {e}",
                    spec.source.as_str()
                )
            });
            assert_eq!(source.as_str(), spec.source.as_str());
            let _ = (
                spec.template.is_value_derived(),
                spec.template.parts().len(),
            );
        }
        Err(error) => {
            let shown = error.to_string();
            let lines = text.matches('\n').count() + 1;
            assert!(
                (1..=lines).contains(&error.line()),
                "error line {} outside 1..={lines} for {text:?}",
                error.line()
            );
            assert!(error.column() >= 1, "column 0 for {text:?}");
            assert!(
                error.column() <= error.source_line().chars().count() + 1,
                "column {} past the end of source line {:?} for {text:?}",
                error.column(),
                error.source_line()
            );
            assert!(
                !error.message().contains('\n'),
                "multi-line message: {shown:?}"
            );
            assert!(
                !error.source_line().contains('\n'),
                "multi-line source line: {shown:?}"
            );
            assert!(
                shown.starts_with(&format!("{}:{}: ", error.line(), error.column())),
                "{shown:?}"
            );
            let _ = error.caret_line();
        }
    }
    Corpus::Keep
});
