//! `${VAR}` substitution in config strings.
//!
//! Done inside deserialisation (not on the raw text) so a value's quotes can never be broken by
//! what the variable holds, and so a missing variable is reported on the line that uses it.
//! [`Expand`] wraps the TOML deserializer and expands every string *value* it hands out, at any
//! depth (webhook headers, MCP server environments, inline JSON schemas), so no field has to
//! opt in and a new section cannot forget to. Keys and enum tags are left alone: they name
//! schema, not data.

use std::fmt;

use serde::de::{
    DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// Replaces every `${NAME}` in `s` with the environment variable `NAME`; `$${` escapes a literal `${`.
/// The error names the variable, never its value.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            // The text itself may hold a secret (a partly written token), so only the
            // reference is quoted.
            let end = tail
                .find('}')
                .ok_or_else(|| "unterminated `${` (write `$${` for a literal `${`)".to_string())?;
            let name = &tail[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{name}}}` is not a valid environment variable name"
                ));
            }
            let value = std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A deserializer that expands `${VAR}` in every string value read through it.
///
/// Errors are raised inside the wrapped deserializer's value, so it attaches that value's
/// position, and `serde_path_to_error` (wrapped around this) names the key.
pub(crate) struct Expand<D>(pub D);

/// Expands the strings a visitor is given, and wraps whatever it descends into.
struct ExpandVisitor<V>(V);

/// Wraps the deserializer a seed is run on.
struct ExpandSeed<S>(S);

/// Wraps sequence and map accesses (map values only: keys are schema).
struct ExpandAccess<A>(A);

/// Wraps enum and variant accesses (variant contents only: the tag is schema).
struct ExpandEnum<A>(A);

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
                self.0.$method($($arg,)* ExpandVisitor(visitor))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Expand<D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_ignored_any();
    }

    /// Field names are schema: never expanded.
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_identifier(visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {
        $(
            fn $method<E: serde::de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.0.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for ExpandVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<V::Value, E> {
        if v.contains('$') {
            self.0.visit_string(expand_env(v).map_err(E::custom)?)
        } else {
            self.0.visit_str(v)
        }
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        if v.contains('$') {
            self.0.visit_string(expand_env(v).map_err(E::custom)?)
        } else {
            self.0.visit_borrowed_str(v)
        }
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<V::Value, E> {
        if v.contains('$') {
            self.0.visit_string(expand_env(&v).map_err(E::custom)?)
        } else {
            self.0.visit_string(v)
        }
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(Expand(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_newtype_struct(Expand(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(ExpandAccess(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(ExpandAccess(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(ExpandEnum(data))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for ExpandSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Expand(d))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for ExpandAccess<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(ExpandSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for ExpandAccess<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(ExpandSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for ExpandEnum<A> {
    type Error = A::Error;
    type Variant = ExpandEnum<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (tag, variant) = self.0.variant_seed(seed)?;
        Ok((tag, ExpandEnum(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for ExpandEnum<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(ExpandSeed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, ExpandVisitor(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, ExpandVisitor(visitor))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::{expand_env, Expand};

    #[test]
    fn expands_escapes_and_leaves_lone_dollars() {
        std::env::set_var("HARK_TEST_KEY", "sk-123");
        assert_eq!(
            expand_env("Bearer ${HARK_TEST_KEY}!").unwrap(),
            "Bearer sk-123!"
        );
        assert_eq!(
            expand_env("cost $5, literal $${X}").unwrap(),
            "cost $5, literal ${X}"
        );
    }

    #[test]
    fn reports_bad_names_and_unterminated_references() {
        assert!(expand_env("${A-B}").unwrap_err().contains("not a valid"));
        let e = expand_env("tok-SECRET ${OPEN").unwrap_err();
        assert!(e.contains("unterminated") && !e.contains("SECRET"), "{e}");
    }

    #[derive(Deserialize)]
    #[serde(tag = "kind")]
    enum Tagged {
        #[serde(rename = "a")]
        A { v: String },
    }

    #[derive(Deserialize)]
    struct Deep {
        list: Vec<Option<String>>,
        map: BTreeMap<String, String>,
        tagged: Tagged,
        json: serde_json::Value,
        n: f64,
    }

    #[test]
    fn every_string_value_at_any_depth_is_expanded_and_keys_are_not() {
        std::env::set_var("HARK_TEST_DEEP", "x");
        let text = r#"
            list = ["${HARK_TEST_DEEP}1", "$${HARK_TEST_DEEP}"]
            map = { "${K}" = "v${HARK_TEST_DEEP}" }
            tagged = { kind = "a", v = "${HARK_TEST_DEEP}" }
            json = { a = [{ b = "${HARK_TEST_DEEP}" }] }
            n = 2
        "#;
        let d = Deep::deserialize(Expand(toml::Deserializer::new(text))).unwrap();
        assert_eq!(
            d.list,
            [
                Some("x1".to_string()),
                Some("${HARK_TEST_DEEP}".to_string())
            ]
        );
        assert_eq!(d.map["${K}"], "vx");
        let Tagged::A { v } = d.tagged;
        assert_eq!(v, "x");
        assert_eq!(d.json["a"][0]["b"], "x");
        assert_eq!(d.n, 2.0);
    }
}
