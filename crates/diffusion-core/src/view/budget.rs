//! The byte budget of one evaluation ([`EvalLimits::max_output_bytes`](super::EvalLimits)),
//! kept without measuring every result exactly.
//!
//! Measuring a result's compact JSON exactly means reading every byte of every string (for
//! escapes), which cost as much as the rest of an evaluation. Far from the limit, an upper
//! bound read from the tree's shape and string lengths (each byte escaped at worst as
//! `\u00XX`) proves the result fits; only when the bounds no longer prove it are the results so
//! far measured exactly, and from then on every result. The outcome (which result, or which
//! insert, goes past the limit) is the exact one.

use serde_json::Value;

use super::size::json_size;
use super::{EvalError, ReferenceValue};

/// Bytes charged against the limit; upper bounds until they stop proving the limit is kept.
pub(super) struct Budget {
    limit: usize,
    used: usize,
    exact: bool,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit,
            used: 0,
            exact: false,
        }
    }

    fn too_large(&self) -> EvalError {
        EvalError::TooLarge { limit: self.limit }
    }

    /// Charges one result (its value and path), or fails when it does not fit. `produced` is
    /// every result charged before, measured again exactly if the bounds stop sufficing.
    pub(super) fn charge(
        &mut self,
        value: &Value,
        path: &str,
        produced: &[(String, ReferenceValue)],
    ) -> Result<(), EvalError> {
        if !self.exact {
            let bound = upper_size(value).saturating_add(path.len());
            if let Some(used) = self.used.checked_add(bound).filter(|u| *u <= self.limit) {
                self.used = used;
                return Ok(());
            }
            self.measure(produced);
        }
        let size = json_size(value) + path.len();
        self.used = self
            .used
            .checked_add(size)
            .filter(|u| *u <= self.limit)
            .ok_or_else(|| self.too_large())?;
        Ok(())
    }

    /// Fails unless `bytes` (what one branch's inserts copy in) fit in what is left.
    pub(super) fn check_fits(
        &mut self,
        bytes: usize,
        produced: &[(String, ReferenceValue)],
    ) -> Result<(), EvalError> {
        if bytes > self.limit - self.used && !self.exact {
            self.measure(produced);
        }
        if bytes > self.limit - self.used {
            return Err(self.too_large());
        }
        Ok(())
    }

    /// Replaces the bounds charged so far with exact sizes.
    fn measure(&mut self, produced: &[(String, ReferenceValue)]) {
        self.used = produced
            .iter()
            .map(|(path, result)| json_size(&result.value) + path.len())
            .sum();
        self.exact = true;
    }
}

/// At least [`json_size`]: the exact size but with every string byte counted as six.
fn upper_size(value: &Value) -> usize {
    let string = |text: &str| text.len().saturating_mul(6).saturating_add(2);
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(n) => n.as_str().len(),
        Value::String(s) => string(s),
        Value::Array(items) => items.iter().fold(items.len() + 2, |sum, item| {
            sum.saturating_add(upper_size(item))
        }),
        Value::Object(map) => map.iter().fold(map.len() + 2, |sum, (key, member)| {
            sum.saturating_add(string(key) + 1)
                .saturating_add(upper_size(member))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(value: Value) -> (String, ReferenceValue) {
        (
            "p".to_owned(),
            ReferenceValue {
                topic_type: crate::topic::TopicType::Json,
                value,
            },
        )
    }

    #[test]
    fn bounds_are_never_below_the_size() {
        for value in [
            json!(null),
            json!(false),
            json!([]),
            json!({}),
            json!({"\n": ["\u{1}", 1.5, true, {"a": "\"\\"}]}),
        ] {
            assert!(upper_size(&value) >= json_size(&value), "{value}");
        }
    }

    #[test]
    fn the_limit_is_exact_whatever_the_bounds() {
        // {"a":"xxxx"} is 12 bytes, its bound far more; with the path "p", 13 per result.
        let value = json!({"a": "xxxx"});
        let mut produced = Vec::new();
        let mut budget = Budget::new(39);
        for _ in 0..3 {
            assert_eq!(budget.charge(&value, "p", &produced), Ok(()));
            produced.push(result(value.clone()));
        }
        assert_eq!(
            budget.charge(&value, "p", &produced),
            Err(EvalError::TooLarge { limit: 39 })
        );
        let mut budget = Budget::new(39);
        budget.charge(&value, "p", &[]).ok();
        produced.truncate(1);
        assert_eq!(budget.check_fits(26, &produced), Ok(()));
        assert!(budget.check_fits(27, &produced).is_err());
    }
}
