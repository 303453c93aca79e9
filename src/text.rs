//! Text from files (class names, file names) made safe for a terminal: control characters, escape sequences,
//! carriage returns, new lines, NUL and DEL are shown escaped, so a crafted name cannot move the cursor, clear
//! the screen or forge a line of output.

use std::borrow::Cow;

/// `text` with every control character escaped as Rust writes it (`\n`, `\u{1b}`); unchanged when it has none.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(printable("seven 7 ∑"), Cow::Borrowed("seven 7 ∑")));
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("x\r\ny\0\u{7f}"), "x\\r\\ny\\u{0}\\u{7f}");
    }
}
