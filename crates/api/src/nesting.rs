//! A cheap look at a YAML text's nesting before it is parsed. A YAML parser spends time and
//! memory per level of nesting (deep flow collections like `[[[[...` cost seconds of CPU), and
//! no Kubernetes object nests more than a couple of dozen levels, so a text that nests deeper
//! than [`MAX_DEPTH`] is refused before any parser sees it.
//!
//! The scan is conservative, not a YAML parser: it counts block levels (indentation and
//! compact `- ` and `? ` items) and flow levels (`[` and `{` outside quotes and comments), skips
//! quoted scalars, comments and block scalars (`|`, `>`, ended where libyaml ends them), reads
//! the rest of a `---` line and what follows an anchor, tag or alias, and may over-count only on
//! odd plain scalars (a plain `foo[` in block context is not counted; only a `[` that starts a
//! value is).

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
    /// Inside a block scalar (`|`, `>`).
    block_scalar: Option<BlockScalar>,
    document_line: usize,
}

/// A block scalar's lines are those indented more than its parent collection and at least as
/// much as its first line (or its indentation indicator): the first other line ends it, as in
/// libyaml, so no line the parser reads as YAML is skipped here.
struct BlockScalar {
    /// Column of the innermost block collection it belongs to.
    parent: usize,
    /// Indentation of its text, once known.
    content: Option<usize>,
}

/// `---` or `...` at column 0 followed by a blank or the line's end (`---x` is a plain scalar).
fn is_document_marker(bytes: &[u8]) -> bool {
    (bytes.starts_with(b"---") || bytes.starts_with(b"..."))
        && matches!(bytes.get(3), None | Some(b' ' | b'\t'))
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
        if let Some(scalar) = &mut self.block_scalar {
            if blank {
                return None;
            }
            let content = *scalar.content.get_or_insert(indent);
            if indent > scalar.parent && indent >= content {
                return None;
            }
            self.block_scalar = None;
        }
        let mut i = 0;
        // Column of the block collection a block scalar on this line would belong to: the
        // mapping of a key on the line, else the last `- ` item's sequence, else the
        // collection enclosing the line.
        let mut scalar_parent = indent;
        let mut content_column = indent;
        if self.quote.is_none() && self.flow == 0 {
            if is_document_marker(bytes) {
                // A new document: nothing stays open across it, and the rest of the line is
                // its content (`--- [[[` is a flow sequence).
                self.block.clear();
                self.document_line = number;
                i = 3;
                scalar_parent = 0;
                content_column = 0;
            } else {
                if blank || bytes[indent] == b'#' {
                    return None;
                }
                // Block context: this line's indentation closes deeper collections, opens one.
                while self.block.last().is_some_and(|c| *c > indent) {
                    self.block.pop();
                }
                scalar_parent = self
                    .block
                    .iter()
                    .rev()
                    .find(|c| **c < indent)
                    .copied()
                    .unwrap_or(0);
                if self.block.last() != Some(&indent) {
                    self.block.push(indent);
                }
                i = indent;
                // Compact items (`- - - x`) each open a level on the same line.
                while bytes.get(i) == Some(&b'-') && matches!(bytes.get(i + 1), None | Some(b' ')) {
                    scalar_parent = i;
                    i += 1;
                    while bytes.get(i) == Some(&b' ') {
                        i += 1;
                    }
                    self.block.push(i);
                }
                content_column = i;
            }
        }
        let mut deepest = self.block.len() + self.flow;
        // Whether the next character starts a token: only there do `[`, `{` and quotes open
        // something in block context (`foo[bar` is a plain scalar).
        let mut token_start = true;
        // Inside an anchor, tag or alias (`&x`, `!!seq`, `*x`): the blank after it starts a token.
        let mut in_property = false;
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
                b' ' | b'\t' => {
                    token_start |= self.flow > 0 || in_property;
                    in_property = false;
                }
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
                    // An indentation indicator (`|2`, `>-4`) fixes the text's indentation.
                    let content = bytes[i + 1..]
                        .iter()
                        .take(2)
                        .find(|b| b.is_ascii_digit())
                        .map(|d| scalar_parent + usize::from(d - b'0'));
                    self.block_scalar = Some(BlockScalar {
                        parent: scalar_parent,
                        content,
                    });
                    break;
                }
                b'&' | b'!' | b'*' if token_start => {
                    in_property = true;
                    token_start = false;
                }
                // `? key` (a complex key) and a `- item` after it open a block level each,
                // and what follows them starts a token (`? - [[`).
                b'?' | b'-' if token_start && space_follows && self.flow == 0 => {
                    if self.block.last().is_none_or(|c| *c < i) {
                        self.block.push(i);
                    }
                    scalar_parent = i;
                    content_column = i + 1 + bytes[i + 1..].iter().take_while(|b| **b == b' ').count();
                    self.block.push(content_column);
                    deepest = deepest.max(self.block.len() + self.flow);
                    if deepest > MAX_DEPTH {
                        return Some(deepest);
                    }
                }
                b':' if space_follows || self.flow > 0 => {
                    token_start = true;
                    scalar_parent = content_column;
                }
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

    const DEEP: usize = 100_000;

    fn deep_flow() -> String {
        format!("{}{}", "[".repeat(DEEP), "]".repeat(DEEP))
    }

    #[test]
    fn deep_flow_on_a_document_marker_line_is_found() {
        for marker in ["---", "...", "--- !!seq", "--- &x"] {
            let text = format!("a: b\n{marker} {}\n", deep_flow());
            assert_eq!(too_deep(&text).map(|t| t.line), Some(2), "{marker}");
        }
        // Not a marker: a plain scalar that only starts with dashes.
        assert_eq!(too_deep(&format!("---{}\n", "[".repeat(100))), None);
    }

    #[test]
    fn deep_flow_after_an_anchor_tag_alias_or_key_indicator_is_found() {
        for prefix in [
            "a: &x",
            "a: !!seq",
            "a: !<tag:yaml.org,2002:seq>",
            "- &x !!seq",
            "? &x",
            "?",
            "a: *x",
        ] {
            let text = format!("{prefix} {}\n", deep_flow());
            assert!(too_deep(&text).is_some(), "{prefix}");
        }
    }

    #[test]
    fn deep_complex_keys_on_one_line_are_found() {
        assert!(too_deep(&format!("{}x\n", "? ".repeat(DEEP))).is_some());
        assert!(too_deep(&format!("{}x\n", "- ? ".repeat(DEEP))).is_some());
    }

    #[test]
    fn a_block_scalar_ends_where_the_parser_ends_it() {
        // The scalar belongs to the innermost `- ` (column 4): a line at column 2 ends it.
        let text = format!("- - - |\n      text\n  - {}\n", deep_flow());
        assert_eq!(too_deep(&text).map(|t| t.line), Some(3));
        // A line less indented than the scalar's first line ends it too.
        let text = format!("a: |\n    text\n  {}\n", deep_flow());
        assert!(too_deep(&text).is_some());
        // So does one less indented than an explicit indentation indicator says.
        let text = format!("a: |4\n    text\n  {}\n", deep_flow());
        assert!(too_deep(&text).is_some());
        // The scalar's own lines stay text, however they look.
        let text = format!(
            "- - - |\n      {}\n      x\n\n      {}\n- b\n",
            "[".repeat(200),
            "{".repeat(200)
        );
        assert_eq!(too_deep(&text), None);
        let text = format!("--- |\n  {}\n", "[".repeat(200));
        assert_eq!(too_deep(&text), None);
        let text = format!("key:\n  |\n {}\n", "[".repeat(200));
        assert_eq!(too_deep(&text), None);
    }

    #[test]
    fn the_pinned_crd_and_the_sample_manifests_pass() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let mut checked = 0;
        let mut folders = vec![
            std::path::PathBuf::from(root).join("../shared/conformance/kgateway"),
            std::path::PathBuf::from(root).join("deploy"),
            std::path::PathBuf::from(root).join("crates/translate/tests/golden"),
            std::path::PathBuf::from(root).join("fuzz/corpus/manifest"),
        ];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).unwrap_or_else(|e| panic!("{}: {e}", folder.display())) {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    assert_eq!(too_deep(&text), None, "{}", path.display());
                    checked += 1;
                }
            }
        }
        assert!(checked > 50, "only {checked} files found");
    }
}
