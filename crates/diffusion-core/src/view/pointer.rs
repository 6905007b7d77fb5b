//! RFC 6901 JSON pointers, validated once at parse time and then used to read, set, insert and
//! remove parts of values.

use std::fmt;

use serde_json::Value;

/// Why a string is not a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// A non-empty pointer must start with `/`.
    #[error("a JSON pointer must be empty or start with '/'")]
    NoLeadingSlash,
    /// `~` is only allowed as `~0` (for `~`) or `~1` (for `/`).
    #[error("'~' must be followed by 0 or 1 ('~0' is '~', '~1' is '/')")]
    BadEscape,
}

/// A parsed JSON pointer such as `/balance/currency` (empty = the whole value).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JsonPointer {
    text: String,
    tokens: Vec<String>,
}

/// How a pointer whose last token names an array element writes into the array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArrayWrite {
    /// `set`: an existing index is replaced; index == length or `-` appends.
    Replace,
    /// `insert`: the value goes before the index (JSON Patch `add`); `-` appends.
    Insert,
}

impl JsonPointer {
    /// Parses and validates `text`.
    pub fn parse(text: &str) -> Result<Self, PointerError> {
        if text.is_empty() {
            return Ok(Self {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(body) = text.strip_prefix('/') else {
            return Err(PointerError::NoLeadingSlash);
        };
        let tokens = body
            .split('/')
            .map(unescape)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True for the empty pointer, which names the whole value.
    pub fn is_root(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The decoded reference tokens.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The part of `value` this pointer names, if there is one.
    pub fn get<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        walk(value, &self.tokens)
    }

    /// Takes the part of `value` this pointer names out of it (leaving `null` there), so the
    /// caller owns it without a copy.
    pub(crate) fn take(&self, value: &mut Value) -> Option<Value> {
        walk_mut(value, &self.tokens).map(std::mem::take)
    }

    /// Writes `new` at this pointer. The parent must exist and be an object or array; the root
    /// pointer replaces the whole value. Returns `Err(())` when nothing could be written.
    pub(crate) fn write(&self, target: &mut Value, new: Value, mode: ArrayWrite) -> Result<(), ()> {
        let Some((last, parent)) = self.tokens.split_last() else {
            *target = new;
            return Ok(());
        };
        match walk_mut(target, parent).ok_or(())? {
            Value::Object(map) => {
                map.insert(last.clone(), new);
                Ok(())
            }
            Value::Array(items) => {
                let index = if last == "-" {
                    items.len()
                } else {
                    array_index(last).ok_or(())?
                };
                match mode {
                    ArrayWrite::Replace if index < items.len() => items[index] = new,
                    _ if index <= items.len() => items.insert(index, new),
                    _ => return Err(()),
                }
                Ok(())
            }
            _ => Err(()),
        }
    }

    /// Removes the part this pointer names; nothing happens when it is absent (or is the root).
    pub(crate) fn remove(&self, target: &mut Value) {
        let Some((last, parent)) = self.tokens.split_last() else {
            return;
        };
        match walk_mut(target, parent) {
            Some(Value::Object(map)) => {
                map.remove(last);
            }
            Some(Value::Array(items)) => {
                if let Some(i) = array_index(last).filter(|i| *i < items.len()) {
                    items.remove(i);
                }
            }
            _ => {}
        }
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn unescape(token: &str) -> Result<String, PointerError> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return Err(PointerError::BadEscape),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// An RFC 6901 array index: `0`, or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let digits_only = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

fn walk<'v>(mut value: &'v Value, tokens: &[String]) -> Option<&'v Value> {
    for token in tokens {
        value = match value {
            Value::Object(map) => map.get(token)?,
            Value::Array(items) => items.get(array_index(token)?)?,
            _ => return None,
        };
    }
    Some(value)
}

fn walk_mut<'v>(mut value: &'v mut Value, tokens: &[String]) -> Option<&'v mut Value> {
    for token in tokens {
        value = match value {
            Value::Object(map) => map.get_mut(token)?,
            Value::Array(items) => items.get_mut(array_index(token)?)?,
            _ => return None,
        };
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> JsonPointer {
        JsonPointer::parse(s).unwrap()
    }

    #[test]
    fn parses_and_reads() {
        let v = json!({"a": {"b/c": [10, 20], "m~n": 1}, "": 5});
        assert_eq!(p("").get(&v), Some(&v));
        assert_eq!(p("/a/b~1c/1").get(&v), Some(&json!(20)));
        assert_eq!(p("/a/m~0n").get(&v), Some(&json!(1)));
        assert_eq!(p("/").get(&v), Some(&json!(5)));
        assert_eq!(p("/a/b~1c/01").get(&v), None);
        assert_eq!(p("/a/b~1c/2").get(&v), None);
        assert_eq!(p("/a/b~1c/x").get(&v), None);
        assert_eq!(p("/a/m~0n/x").get(&v), None);
    }

    #[test]
    fn rejects_bad_pointers() {
        assert_eq!(JsonPointer::parse("a"), Err(PointerError::NoLeadingSlash));
        assert_eq!(JsonPointer::parse("/a~2"), Err(PointerError::BadEscape));
        assert_eq!(JsonPointer::parse("/a~"), Err(PointerError::BadEscape));
    }

    #[test]
    fn writes_need_a_parent() {
        let mut v = json!({"a": {}, "l": [1, 2]});
        p("/a/x")
            .write(&mut v, json!(1), ArrayWrite::Replace)
            .unwrap();
        p("/l/0")
            .write(&mut v, json!(9), ArrayWrite::Replace)
            .unwrap();
        p("/l/-")
            .write(&mut v, json!(3), ArrayWrite::Replace)
            .unwrap();
        p("/l/0")
            .write(&mut v, json!(0), ArrayWrite::Insert)
            .unwrap();
        assert_eq!(v, json!({"a": {"x": 1}, "l": [0, 9, 2, 3]}));
        assert!(
            p("/b/x")
                .write(&mut v, json!(1), ArrayWrite::Replace)
                .is_err()
        );
        assert!(
            p("/l/9")
                .write(&mut v, json!(1), ArrayWrite::Insert)
                .is_err()
        );
        assert!(
            p("/a/x/y")
                .write(&mut v, json!(1), ArrayWrite::Insert)
                .is_err()
        );
        p("").write(&mut v, json!(7), ArrayWrite::Replace).unwrap();
        assert_eq!(v, json!(7));
    }

    #[test]
    fn removes_quietly() {
        let mut v = json!({"a": 1, "l": [1, 2]});
        p("/a").remove(&mut v);
        p("/zz").remove(&mut v);
        p("/l/0").remove(&mut v);
        p("/l/5").remove(&mut v);
        p("").remove(&mut v);
        assert_eq!(v, json!({"l": [2]}));
    }
}
