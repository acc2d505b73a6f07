//! A cheap look at a YAML text's nesting before it is parsed. A YAML parser spends time and
//! memory per level of nesting (deep flow collections like `[[[[...` cost seconds of CPU), and
//! no Kubernetes object nests more than a couple of dozen levels, so a text that nests deeper
//! than [`MAX_DEPTH`] is refused before any parser sees it.
//!
//! The scan is conservative, not a YAML parser: it counts block levels (indentation and
//! compact `- ` items) and flow levels (`[` and `{` outside quotes and comments), skips quoted
//! scalars, comments and block scalars (`|`, `>`), and may over-count only on odd plain
//! scalars (a plain `foo[` in block context is not counted; only a `[` that starts a value is).

/// Deepest nesting accepted: Kubernetes objects stay far below (a Gateway API HTTPRoute with
/// every field set nests about 12 levels), and a parser stays fast well above it.
pub const MAX_DEPTH: usize = 64;

/// Where a text first nests deeper than [`MAX_DEPTH`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    /// 1-based line of the document that holds it.
    pub document_line: usize,
    /// 1-based line where the limit is passed.
    pub line: usize,
}

/// Scans `text` and returns where it first nests deeper than `MAX_DEPTH`, if it does.
pub fn too_deep(text: &str) -> Option<TooDeep> {
    let mut scan = Scan::default();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some(depth) = scan.line(line, number)
            && depth > MAX_DEPTH
        {
            return Some(TooDeep {
                document_line: scan.document_line,
                line: number,
            });
        }
    }
    None
}

#[derive(Default)]
struct Scan {
    /// Indentation columns of the open block collections (each is one level).
    block: Vec<usize>,
    /// Open `[` and `{`.
    flow: usize,
    /// Inside a quoted scalar that spans lines: its closing quote.
    quote: Option<u8>,
    /// Inside a block scalar (`|`, `>`): lines indented more than this are its text.
    block_scalar_parent: Option<usize>,
    document_line: usize,
}

impl Scan {
    /// Takes one line; returns the deepest nesting seen on it.
    fn line(&mut self, line: &str, number: usize) -> Option<usize> {
        if self.document_line == 0 {
            self.document_line = 1;
        }
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|b| **b == b' ').count();
        let blank = bytes[indent..].iter().all(u8::is_ascii_whitespace);
        if let Some(parent) = self.block_scalar_parent {
            if blank || indent > parent {
                return None;
            }
            self.block_scalar_parent = None;
        }
        if self.quote.is_none() && self.flow == 0 {
            if line.starts_with("---") || line.starts_with("...") {
                // A new document: nothing stays open across it.
                self.block.clear();
                self.document_line = number;
                return None;
            }
            if blank || bytes[indent] == b'#' {
                return None;
            }
        }
        let mut i = 0;
        if self.quote.is_none() && self.flow == 0 {
            // Block context: this line's indentation closes deeper collections, opens one.
            while self.block.last().is_some_and(|c| *c > indent) {
                self.block.pop();
            }
            if self.block.last() != Some(&indent) {
                self.block.push(indent);
            }
            i = indent;
            // Compact items (`- - - x`) each open a level on the same line.
            while bytes.get(i) == Some(&b'-') && matches!(bytes.get(i + 1), None | Some(b' ')) {
                i += 1;
                while bytes.get(i) == Some(&b' ') {
                    i += 1;
                }
                self.block.push(i);
            }
        }
        let mut deepest = self.block.len() + self.flow;
        // Whether the next character starts a token: only there do `[`, `{` and quotes open
        // something in block context (`foo[bar` is a plain scalar).
        let mut token_start = true;
        while i < bytes.len() {
            let b = bytes[i];
            if let Some(q) = self.quote {
                match b {
                    b'\\' if q == b'"' => i += 1,
                    b'\'' if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                    _ if b == q => self.quote = None,
                    _ => {}
                }
                i += 1;
                continue;
            }
            let space_follows = matches!(bytes.get(i + 1), None | Some(b' ' | b'\t'));
            match b {
                b' ' | b'\t' => token_start |= self.flow > 0,
                b'#' if i == 0 || matches!(bytes[i - 1], b' ' | b'\t') => break,
                b'"' | b'\'' if token_start => {
                    self.quote = Some(b);
                    token_start = false;
                }
                b'[' | b'{' if token_start || self.flow > 0 => {
                    self.flow += 1;
                    deepest = deepest.max(self.block.len() + self.flow);
                    if deepest > MAX_DEPTH {
                        return Some(deepest);
                    }
                    token_start = true;
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    token_start = false;
                }
                b',' if self.flow > 0 => token_start = true,
                b'|' | b'>' if token_start && self.flow == 0 => {
                    self.block_scalar_parent = Some(indent);
                    break;
                }
                b':' if space_follows || self.flow > 0 => token_start = true,
                _ => token_start = false,
            }
            i += 1;
        }
        Some(deepest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_is_found_on_its_line() {
        let text = format!(
            "a: b\n---\nc: d\nx: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            too_deep(&text),
            Some(TooDeep {
                document_line: 2,
                line: 4
            })
        );
    }

    #[test]
    fn deep_blocks_are_found() {
        let mut text = String::new();
        for level in 0..70 {
            text.push_str(&" ".repeat(level));
            text.push_str("k:\n");
        }
        assert_eq!(too_deep(&text).map(|t| t.line), Some(65));
        let compact = format!("{}x\n", "- ".repeat(70));
        assert!(too_deep(&compact).is_some());
    }

    #[test]
    fn ordinary_manifests_pass() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: x # [[[[\n  annotations:\n    a: \"[[[[[[\"\n    \
                    b: '{{{{'\n    c: foo[bar\n    d: |\n      [[[[[[[[\n      {{{{{{{{\n    e: {x: [1, 2]}\nspec:\n  \
                    ports:\n  - name: http\n    port: 80\n";
        let deep_inside_strings = text.replace("[[[[[[[[", &"[".repeat(200));
        assert_eq!(too_deep(text), None);
        assert_eq!(too_deep(&deep_inside_strings), None);
        let json = format!("{}1{}", "{\"a\": ".repeat(30), "}".repeat(30));
        assert_eq!(too_deep(&json), None);
        let json = format!("{}1{}", "{\"a\": ".repeat(65), "}".repeat(65));
        assert!(too_deep(&json).is_some());
    }
}
