//! Where a key is in the config text, for errors found after deserialisation.
//!
//! Serde reports a position only while it reads a value; a rule spanning several values
//! (`min < max`, unique tool names) is checked afterwards, on typed structs that no longer know
//! where they came from. Rather than carrying positions through every config type, the text is
//! read a second time, only when such an error is reported, into a tree of spans that a key
//! path as `serde_path_to_error` prints it (`agent.webhooks[1].name`) can be looked up in.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A value's children with their positions; scalars have none.
enum Node {
    Table(Vec<(String, Located)>),
    Array(Vec<Located>),
    Scalar,
}

/// A value and, when the parser knows it, where it starts. Implicit tables (`listen` in
/// `[listen.vad]`) have no position, which `toml::Spanned` cannot express (it fails), so this
/// speaks `Spanned`'s protocol itself and also takes the plain table toml gives instead.
struct Located {
    start: Option<usize>,
    node: Node,
}

/// `toml::Spanned`'s protocol with the toml parser (serde_spanned's doc-hidden constants): the
/// struct name and fields that ask for the value's span. Checked against `toml::Spanned` by a
/// test; should it ever change, lines are simply left out of errors.
const SPANNED: &str = "$__serde_spanned_private_Spanned";
const START: &str = "$__serde_spanned_private_start";
const END: &str = "$__serde_spanned_private_end";
const VALUE: &str = "$__serde_spanned_private_value";

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor).map(|l: Located| l.node)
    }
}

impl<'de> Deserialize<'de> for Located {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Located, D::Error> {
        d.deserialize_struct(SPANNED, &[START, END, VALUE], NodeVisitor)
    }
}

struct NodeVisitor;

fn scalar<E>() -> Result<Located, E> {
    Ok(Located {
        start: None,
        node: Node::Scalar,
    })
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Located;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Located, E> {
        scalar()
    }
    fn visit_i64<E>(self, _: i64) -> Result<Located, E> {
        scalar()
    }
    fn visit_u64<E>(self, _: u64) -> Result<Located, E> {
        scalar()
    }
    fn visit_f64<E>(self, _: f64) -> Result<Located, E> {
        scalar()
    }
    fn visit_str<E>(self, _: &str) -> Result<Located, E> {
        scalar()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Located, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Located {
            start: None,
            node: Node::Array(items),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Located, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(Located {
                start: None,
                node: Node::Table(Vec::new()),
            });
        };
        if first == START {
            // The span protocol: start, end, then the value itself (read as a bare node: as
            // `Located` it would ask for the span again, forever).
            let start: usize = map.next_value()?;
            let mut node = Node::Scalar;
            while let Some(key) = map.next_key::<String>()? {
                if key == VALUE {
                    node = map.next_value()?;
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            return Ok(Located {
                start: Some(start),
                node,
            });
        }
        let mut entries = vec![(first, map.next_value()?)];
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Located {
            start: None,
            node: Node::Table(entries),
        })
    }
}

/// The 1-based line of the value at `key` (`a.b[2].c`), or `None` if the text does not set it
/// (a default) or does not parse.
pub(crate) fn line_of(text: &str, key: &str) -> Option<usize> {
    let root: Node = toml::from_str(text).ok()?;
    let mut node = &root;
    let mut start = None;
    for part in key.split('.') {
        let (name, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            let Node::Table(entries) = node else {
                return None;
            };
            let (_, value) = entries.iter().find(|(k, _)| k == name)?;
            start = value.start;
            node = &value.node;
        }
        for index in indices.split('[').skip(1) {
            let i: usize = index.strip_suffix(']')?.parse().ok()?;
            let Node::Array(items) = node else {
                return None;
            };
            let item = items.get(i)?;
            start = item.start;
            node = &item.node;
        }
    }
    let start = start?.min(text.len());
    Some(1 + text[..start].matches('\n').count())
}

#[cfg(test)]
mod tests {
    use super::{line_of, Located};

    const TEXT: &str = r#"# comment
[agent]
instructions = "x"
builtin_tools = [
  "end_call",
  "send_dtmf",
]

[agent.eou]
max_speech_wait = 0.4

[[agent.webhooks]]
name = "a"

[[agent.webhooks]]
description = "b"
name = "b"
headers = { X = "1" }
"#;

    #[test]
    fn finds_tables_values_array_items_and_array_tables() {
        assert_eq!(line_of(TEXT, "agent.instructions"), Some(3));
        assert_eq!(line_of(TEXT, "agent.builtin_tools[1]"), Some(6));
        assert_eq!(line_of(TEXT, "agent.eou.max_speech_wait"), Some(10));
        assert_eq!(line_of(TEXT, "agent.webhooks[1].name"), Some(17));
        assert_eq!(line_of(TEXT, "agent.webhooks[1].headers.X"), Some(18));
        assert_eq!(line_of(TEXT, "agent.eou.min_speech_wait"), None);
        assert_eq!(line_of(TEXT, "agent.builtin_tools[7]"), None);
    }

    #[test]
    fn implicit_and_dotted_tables_have_no_line_but_their_values_do() {
        let text = "[listen.vad]\nthreshold = 2\n\n[x]\ny.z = 1\n";
        assert_eq!(line_of(text, "listen.vad.threshold"), Some(2));
        assert_eq!(line_of(text, "listen.vad"), Some(1));
        assert_eq!(line_of(text, "listen"), None);
        assert_eq!(line_of(text, "x.y.z"), Some(5));
    }

    #[test]
    fn the_span_protocol_is_toml_spanned() {
        #[derive(serde::Deserialize)]
        struct Both {
            a: toml::Spanned<i64>,
        }
        let text = "\n\n  a = 5\n";
        let theirs: Both = toml::from_str(text).unwrap();
        let ours: std::collections::BTreeMap<String, Located> = toml::from_str(text).unwrap();
        assert_eq!(ours["a"].start, Some(theirs.a.span().start));
    }
}
