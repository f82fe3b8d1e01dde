//! `${VAR}` substitution in config strings.
//!
//! Done inside deserialisation (not on the raw text) so a value's quotes can never be broken by
//! what the variable holds, and so a missing variable is reported on the line that uses it.

use std::path::PathBuf;

use serde::{de::Error as _, Deserialize, Deserializer};

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
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in {s:?}"))?;
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

/// serde helper: an optional string with `${VAR}` expanded.
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let raw = Option::<String>::deserialize(d)?;
    raw.map(|s| expand_env(&s).map_err(D::Error::custom))
        .transpose()
}

/// serde helper: an optional path with `${VAR}` expanded.
pub(crate) fn opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(opt_string(d)?.map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::expand_env;

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
        assert!(expand_env("${OPEN").unwrap_err().contains("unterminated"));
    }
}
