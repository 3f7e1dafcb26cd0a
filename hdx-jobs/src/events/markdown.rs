//! Markdown fields (notes, license_other, methodology_other, description, caveats) are compared
//! and reported as plain text, so a formatting-only edit is no change. The old service rendered
//! the Markdown to HTML, removed the tags (`<[^><]*>`), turned newlines into spaces, wrote `"` as
//! `&quot;` and trimmed. We do the same with a CommonMark parser (pulldown-cmark) and, a
//! deliberate difference, collapse every whitespace run to one space (the two renderers place
//! newlines and indentation differently; the words and their order are what matter).

use pulldown_cmark::{Event, Parser, Tag, TagEnd};
use serde_json::Value;

use super::pyvalue::{py_str, truthy};

/// The plain text of a Markdown field's value; a missing or empty value is "".
pub fn plain_text(value: &Value) -> String {
    if !truthy(value) {
        return String::new();
    }
    match value {
        Value::String(s) => markdown_to_plain(s),
        other => markdown_to_plain(&py_str(other)),
    }
}

/// Markdown to plain text: rendered, tags removed, `"` as `&quot;`, whitespace runs collapsed to
/// one space, trimmed.
pub fn markdown_to_plain(markdown: &str) -> String {
    collapse_whitespace(&strip_tags(&render(markdown.trim())))
}

/// `text` with `\r` dropped wherever it is, every run of other whitespace (Unicode's, as
/// `char::is_whitespace`) as one space, trimmed, and `"` as `&quot;`. Runs of other characters
/// are copied whole and only non-ASCII characters are decoded: a few KB of notes made a char by
/// char loop a visible cost.
fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Whitespace came since the last character written: a space before the next one.
    let mut gap = false;
    // Start of the run of ordinary characters not yet copied.
    let mut run = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let (width, ordinary, space) = match bytes[i] {
            b'\r' | b'"' => (1, false, false),
            b if b.is_ascii() => (1, !is_ascii_space(b), is_ascii_space(b)),
            _ => {
                let c = text[i..].chars().next().unwrap_or(' ');
                (c.len_utf8(), !c.is_whitespace(), c.is_whitespace())
            }
        };
        if ordinary {
            if run == i && gap {
                if !out.is_empty() {
                    out.push(' ');
                }
                gap = false;
            }
            i += width;
            // The rest of a word of plain ASCII, in a tight loop.
            while i < bytes.len() && matches!(bytes[i], b'!'..=b'~') && bytes[i] != b'"' {
                i += 1;
            }
            continue;
        }
        out.push_str(&text[run..i]);
        if space {
            gap = true;
        } else if bytes[i] == b'"' {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.push_str("&quot;");
        }
        i += width;
        run = i;
    }
    out.push_str(&text[run..]);
    out
}

/// ASCII whitespace as `char::is_whitespace` has it (tab, line feed, vertical tab, form feed,
/// carriage return, space); the caller treats `\r` apart.
fn is_ascii_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
}

/// The HTML text content a renderer would write: text escaped as HTML body text, raw HTML kept
/// (its tags are stripped next), a line break around every block, image alt text dropped (it
/// lives in an attribute).
fn render(markdown: &str) -> String {
    let mut html = String::with_capacity(markdown.len() + 16);
    let mut in_image = 0usize;
    for event in Parser::new(markdown) {
        match event {
            Event::Text(text) | Event::Code(text) if in_image == 0 => escape_body(&mut html, &text),
            Event::Html(raw) | Event::InlineHtml(raw) if in_image == 0 => html.push_str(&raw),
            Event::SoftBreak | Event::HardBreak | Event::Rule => html.push('\n'),
            Event::Start(Tag::Image { .. }) => in_image += 1,
            Event::End(TagEnd::Image) => in_image = in_image.saturating_sub(1),
            Event::Start(tag) if !is_inline(&tag.to_end()) => html.push('\n'),
            Event::End(tag) if !is_inline(&tag) => html.push('\n'),
            _ => {}
        }
    }
    html
}

fn is_inline(tag: &TagEnd) -> bool {
    matches!(
        tag,
        TagEnd::Emphasis
            | TagEnd::Strong
            | TagEnd::Strikethrough
            | TagEnd::Link
            | TagEnd::Image
            | TagEnd::Superscript
            | TagEnd::Subscript
    )
}

/// `&`, `<`, `>` as entities (what Markdown renderers escape in text); the text between them is
/// copied whole.
fn escape_body(out: &mut String, text: &str) {
    let mut rest = text;
    // Bytes rather than chars: the three are ASCII, never part of a longer UTF-8 sequence.
    while let Some(at) = rest.bytes().position(|b| matches!(b, b'&' | b'<' | b'>')) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            _ => "&gt;",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// Removes every `<...>` holding no `<` or `>` (the old service's `re.sub('<[^><]*>', '', ...)`).
pub fn strip_tags(html: &str) -> String {
    let bytes = html.as_bytes();
    let mut out = String::with_capacity(html.len());
    let mut i = 0;
    let mut kept_from = 0;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            let close = bytes[i + 1..]
                .iter()
                .position(|b| *b == b'<' || *b == b'>')
                .map(|p| p + i + 1);
            if let Some(end) = close.filter(|&end| bytes[end] == b'>') {
                out.push_str(&html[kept_from..i]);
                i = end + 1;
                kept_from = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&html[kept_from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_old_services_examples() {
        let notes = "
    This is a paragraph with **bold** and _italic_ text.
    <ul>
        <li>Item 1</li>
        <li>Item 2</li>
    </ul>
    [Visit our website](https://example.com)
    <div class=\"warning\">This is a warning!</div>
    ";
        assert_eq!(
            markdown_to_plain(notes),
            "This is a paragraph with bold and italic text. Item 1 Item 2 Visit our website This is a warning!"
        );
        assert_eq!(
            markdown_to_plain(
                "This is a *Markdown* example <em>with</em> HTML tags.\n\nExtra text."
            ),
            "This is a Markdown example with HTML tags. Extra text."
        );
        assert_eq!(
            markdown_to_plain(
                "   A *Markdown* example <em>with</em> HTML tags.   \n\nText.   \n\n   "
            ),
            "A Markdown example with HTML tags. Text."
        );
    }

    #[test]
    fn formatting_does_not_matter() {
        assert_eq!(
            markdown_to_plain("This is a paragraph with bold and _italic_ text."),
            markdown_to_plain("This is a paragraph with **bold** and *italic* text.")
        );
        assert_eq!(
            markdown_to_plain("# Title\n\n- one\n- two\n  - nested"),
            "Title one two nested"
        );
        assert_eq!(markdown_to_plain("a\r\nb"), "a b");
    }

    #[test]
    fn escapes_quotes_and_html_specials_like_the_renderer() {
        assert_eq!(
            markdown_to_plain("He said \"hi\" & left <3"),
            "He said &quot;hi&quot; &amp; left &lt;3"
        );
        assert_eq!(markdown_to_plain("`a<b>`"), "a&lt;b&gt;");
        assert_eq!(markdown_to_plain("see ![a chart](x.png) here"), "see here");
        assert_eq!(markdown_to_plain("<https://x.org>"), "https://x.org");
    }

    #[test]
    fn missing_and_empty_values_are_empty() {
        assert_eq!(plain_text(&json!(null)), "");
        assert_eq!(plain_text(&json!("")), "");
        assert_eq!(plain_text(&json!("  \n ")), "");
        assert_eq!(plain_text(&json!(12)), "12");
    }

    /// The collapsing as it was written first (word by word), against which the byte loop is
    /// checked.
    fn collapse_by_words(text: &str) -> String {
        let mut out = String::new();
        for word in text.split(|c: char| c.is_whitespace() && c != '\r') {
            let word: String = word.chars().filter(|c| *c != '\r').collect();
            if word.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&word.replace('"', "&quot;"));
        }
        out
    }

    #[test]
    fn collapses_whitespace_like_the_word_loop() {
        for text in [
            "",
            " ",
            "\r",
            "a",
            " a ",
            "a\rb",
            "a \r b",
            "\r a\r \"b\" \r",
            "\"",
            " \" ",
            "x\u{a0}y\u{2003}z\u{85}w\u{3000}v\u{1c}u\u{200b}t",
            "é \t\n\u{b}\u{c} ü\r\n\r\n",
        ] {
            assert_eq!(
                collapse_whitespace(text),
                collapse_by_words(text),
                "{text:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn collapses_any_text_like_the_word_loop(
            text in "[a \\t\\r\\n\"é\u{a0}\u{85}\u{2003}\u{3000}\u{b}\u{c}\u{1c}]{0,40}"
        ) {
            proptest::prop_assert_eq!(collapse_whitespace(&text), collapse_by_words(&text));
        }
    }

    #[test]
    fn strips_tags_like_the_regex() {
        assert_eq!(strip_tags("a<b>c</b>d"), "acd");
        assert_eq!(strip_tags("a < b <i>c</i>"), "a < b c");
        assert_eq!(strip_tags("x<y<z>w"), "x<yw");
        assert_eq!(strip_tags("<"), "<");
        assert_eq!(strip_tags("é<b>ü</b>"), "éü");
    }
}
