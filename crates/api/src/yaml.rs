//! YAML as kgw writes it (the state file, `kgw get -o yaml`): block style as kubectl prints it,
//! and every string that is not plainly a string quoted. serde_yaml_ng writes `on`, `yes`, `n`,
//! `1_000` or `2001-01-01` bare, which YAML 1.1 readers (PyYAML, older kubectl, Ruby) read as a
//! boolean, a number or a date: a Service named `on` would come back as `true`.

use serde_json::Value;

/// The value as block-style YAML.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(&mut out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_sequence(&mut out, items, 0, false),
        scalar => {
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
    out
}

/// Writes `map` at `indent`; with `inline`, the first key goes where the cursor is (after `- `).
fn write_mapping(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize, inline: bool) {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !inline {
            push_indent(out, indent);
        }
        out.push_str(&string_text(key));
        out.push(':');
        match value {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                write_mapping(out, m, indent + 2, false);
            }
            // kubectl's style: a list under a key is not indented further.
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_sequence(out, items, indent, false);
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

fn write_sequence(out: &mut String, items: &[Value], indent: usize, inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline {
            push_indent(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => write_mapping(out, m, indent + 2, true),
            Value::Array(inner) if !inner.is_empty() => write_sequence(out, inner, indent + 2, true),
            scalar => {
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string_text(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A string bare when every YAML reader (1.1 and 1.2) reads it back as that string; otherwise
/// double-quoted.
fn string_text(s: &str) -> String {
    if is_plainly_a_string(s) {
        s.to_string()
    } else {
        double_quoted(s)
    }
}

/// `s` as a YAML double-quoted scalar. Every character YAML may not hold raw (outside its
/// printable set, YAML 1.2 §5.1: libyaml refuses them) or may read as something else (NEL, LS
/// and PS are line breaks a reader folds, a BOM may be dropped) is written as `\uXXXX`.
fn double_quoted(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_printable_as_is(c) => out.push(c),
            // Every non-printable char is in the Basic Multilingual Plane.
            c => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// YAML's c-printable, less the characters readers do not keep as written (NEL, LS, PS, BOM).
fn is_printable_as_is(c: char) -> bool {
    matches!(c,
        '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..='\u{10ffff}')
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// Bare only: starts with an ASCII letter or `/`, holds ASCII letters, digits, `.`, `_`, `-`, `/`, and is
/// not one of YAML 1.1's words for booleans and null. Numbers, dates, times and `.inf` all
/// start with a digit, a sign or a dot, so they are quoted.
fn is_plainly_a_string(s: &str) -> bool {
    const YAML_1_1_WORDS: &[&str] = &["y", "yes", "n", "no", "true", "false", "on", "off", "null"];
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
        && !YAML_1_1_WORDS.contains(&s.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ambiguous_strings_are_quoted_and_read_back_as_strings() {
        let words = [
            "on",
            "On",
            "yes",
            "Y",
            "n",
            "off",
            "NO",
            "null",
            "~",
            "1e3",
            "1_000",
            "=",
            "2001-01-01",
            "1:20",
            "+1",
            ".inf",
            "",
            "-",
            "a: b",
            "#x",
            "multi\nline",
            "tab\there",
            "ünï",
        ];
        for word in words {
            let value = json!({"metadata": {"name": word, "labels": {word: word}}, "list": [word, [word]]});
            let text = to_string(&value);
            assert!(
                !text.contains(&format!(": {word}\n")) || word.is_empty(),
                "{word:?} bare in:\n{text}"
            );
            let back: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
            assert_eq!(back, value, "{text}");
        }
    }

    #[test]
    fn kubectl_style() {
        let value = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "httpbin", "labels": {}},
            "spec": {"ports": [{"name": "http", "port": 8000}], "x": [[1, 2], []], "ok": true, "none": null}
        });
        assert_eq!(
            to_string(&value),
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: httpbin\n  labels: {}\nspec:\n  ports:\n  - name: http\n    \
             port: 8000\n  x:\n  - - 1\n    - 2\n  - []\n  ok: true\n  none: null\n"
        );
    }

    #[test]
    fn characters_yaml_cannot_hold_raw_are_escaped_and_read_back_unchanged() {
        // Outside YAML's printable set (libyaml refuses them raw), or line breaks a reader may
        // fold (NEL, LS, PS), or a byte order mark.
        let characters = [
            '\u{7f}',
            '\u{80}',
            '\u{85}',
            '\u{9f}',
            '\u{2028}',
            '\u{2029}',
            '\u{feff}',
            '\u{fffe}',
            '\u{ffff}',
            '\u{1}',
            '\u{1b}',
            '\u{a0}',
            '\u{e000}',
            '\u{10ffff}',
        ];
        for c in characters {
            for s in [c.to_string(), format!("a{c}b"), format!("{c}{c} x")] {
                let value = json!({"metadata": {"annotations": {"k": s, s.clone(): "v"}}, "list": [s]});
                let text = to_string(&value);
                let back: serde_json::Value = serde_yaml_ng::from_str(&text)
                    .unwrap_or_else(|e| panic!("U+{:04X}: {e}\n{text}", c as u32));
                assert_eq!(back, value, "U+{:04X}:\n{text}", c as u32);
            }
        }
    }
}
