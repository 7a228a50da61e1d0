//! A small XML element tree over quick-xml, enough for SOAP requests.
use crate::DecodeError;
use quick_xml::events::Event;
use quick_xml::Reader;

#[derive(Debug, Default, Clone)]
pub struct Element {
    /// Local name, prefix stripped.
    pub name: String,
    /// (qualified name, value)
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

/// Dropped without recursion (the depth limit bounds it anyway; a tree
/// made some other way must not overflow the stack either).
impl Drop for Element {
    fn drop(&mut self) {
        let mut pending = std::mem::take(&mut self.children);
        while let Some(mut e) = pending.pop() {
            pending.append(&mut e.children);
        }
    }
}

impl Element {
    /// `xsi:type` (any prefix), with its own prefix stripped.
    pub fn xsi_type(&self) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k.ends_with(":type")).map(|(_, v)| v.rsplit(':').next().unwrap_or(v))
    }
    /// The unprefixed `type` attribute (a MoRef's type).
    pub fn plain_attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn is_nil(&self) -> bool {
        self.attrs.iter().any(|(k, v)| k.ends_with(":nil") && v == "true")
    }
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

fn local(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name);
    match s.rfind(':') {
        Some(i) => s[i + 1..].to_string(),
        None => s.into_owned(),
    }
}

/// Deepest element nesting accepted. vim25 requests nest a few dozen levels
/// at most (a device's backing's parent's …); the limit is checked before
/// an element is made, so neither parsing, decoding nor dropping the tree
/// can run out of stack.
pub const MAX_DEPTH: usize = 128;
/// Most elements accepted in one document (bounds the tree's memory).
pub const MAX_ELEMENTS: usize = 2_000_000;

pub fn parse(input: &str) -> Result<Element, DecodeError> {
    let mut reader = Reader::from_str(input);
    let mut stack: Vec<Element> = vec![Element::default()];
    let bad = |e: String| DecodeError::Malformed(e);
    let mut count = 0usize;
    let mut more = |depth: usize| {
        count += 1;
        if depth > MAX_DEPTH {
            Err(bad(format!("elements nested deeper than {MAX_DEPTH} levels")))
        } else if count > MAX_ELEMENTS {
            Err(bad(format!("more than {MAX_ELEMENTS} elements")))
        } else {
            Ok(())
        }
    };
    loop {
        match reader.read_event().map_err(|e| bad(e.to_string()))? {
            Event::Start(s) => {
                more(stack.len())?;
                stack.push(start(&s)?);
            }
            Event::Empty(s) => {
                more(stack.len())?;
                let el = start(&s)?;
                stack.last_mut().unwrap().children.push(el);
            }
            Event::End(_) => {
                let el = stack.pop().unwrap();
                match stack.last_mut() {
                    Some(p) => p.children.push(el),
                    None => return Err(bad("unbalanced end tag".into())),
                }
            }
            Event::Text(t) => {
                let s = t.unescape().map_err(|e| bad(e.to_string()))?;
                stack.last_mut().unwrap().text.push_str(&s);
            }
            Event::CData(t) => {
                stack.last_mut().unwrap().text.push_str(&String::from_utf8_lossy(&t));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if stack.len() != 1 {
        return Err(bad("unexpected end of document".into()));
    }
    let mut root = stack.pop().unwrap();
    match root.children.len() {
        1 => Ok(root.children.pop().unwrap()),
        0 => Err(bad("empty document".into())),
        _ => Err(bad("more than one root element".into())),
    }
}

fn start(s: &quick_xml::events::BytesStart) -> Result<Element, DecodeError> {
    let mut el = Element { name: local(s.name().as_ref()), attrs: vec![], children: vec![], text: String::new() };
    for a in s.attributes() {
        let a = a.map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let v = a.unescape_value().map_err(|e| DecodeError::Malformed(e.to_string()))?;
        el.attrs.push((String::from_utf8_lossy(a.key.as_ref()).into_owned(), v.into_owned()));
    }
    Ok(el)
}

/// Whether `c` is a character XML 1.0 cannot carry, raw or as a character
/// reference: the controls below U+0020 but tab, newline and carriage
/// return, and U+FFFE and U+FFFF (outside the Char production).
pub fn forbidden(c: char) -> bool {
    ((c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{fffe}' | '\u{ffff}')
}

/// Appends `s` as XML character data or attribute value: markup escaped,
/// and characters XML cannot carry replaced by U+FFFD, so what is written
/// always parses. The one escape function of every XML wire format.
pub fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if forbidden(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// [`escape`] into a new string.
pub fn escaped(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    escape(s, &mut o);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_always_parses_back() {
        let s = "a<b>&\"c'\u{1}\td\u{FFFF}";
        let e = escaped(s);
        assert_eq!(e, "a&lt;b&gt;&amp;&quot;c&apos;\u{FFFD}\td\u{FFFD}");
        let doc = parse(&format!("<x a=\"{e}\">{e}</x>")).unwrap();
        assert_eq!(doc.text, "a<b>&\"c'\u{FFFD}\td\u{FFFD}");
        assert_eq!(doc.attrs[0].1, doc.text);
    }

    #[test]
    fn deep_documents_are_refused_and_deep_trees_drop_without_recursion() {
        let deep = format!("{}{}", "<a>".repeat(MAX_DEPTH + 2), "</a>".repeat(MAX_DEPTH + 2));
        assert!(matches!(parse(&deep), Err(DecodeError::Malformed(m)) if m.contains("nested deeper")));
        let ok = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        // A tree a million deep, made by hand: dropping it must not overflow.
        let mut e = Element::default();
        for _ in 0..1_000_000 {
            let mut p = Element::default();
            p.children.push(e);
            e = p;
        }
        drop(e);
    }
}
