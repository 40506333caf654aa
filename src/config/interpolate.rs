//! `${VAR}` interpolation of string values from the environment.
//!
//! It runs on individual values after typed deserialisation, not on the raw file text, so TOML
//! syntax and type errors still point at the right line and column, and so a variable's value can
//! never change the structure of the file. `$${` stands for a literal `${`; any other `$` is kept as
//! is, because URLs and header values legitimately contain dollars.
//!
//! The environment is a parameter so tests never read or mutate the process environment.

use std::fmt;

/// How a variable is looked up; the real one is `|name| std::env::var(name).ok()`.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A string value as written in the file and after interpolation.
///
/// Error messages must only ever quote `raw`: `value` may hold a secret from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expanded {
    pub raw: String,
    pub value: String,
    /// Whether any `${VAR}` was substituted, i.e. whether parts of `value` are not in the file.
    pub from_env: bool,
}

impl Expanded {
    /// Quotes a URL's scheme if the file spells it out literally (before any `$`), otherwise
    /// the value as written in the file: a scheme taken from the environment is not shown.
    pub(crate) fn quote_scheme(&self, scheme: &str) -> String {
        let literal = &self.raw[..self.raw.find('$').unwrap_or(self.raw.len())];
        let written = literal
            .strip_prefix(scheme)
            .is_some_and(|rest| rest.starts_with(':'));
        if written || !self.from_env {
            format!("{scheme:?}")
        } else {
            format!("in {:?}", self.raw)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InterpolateError {
    Missing(String),
    Unterminated,
    InvalidName(String),
}

impl fmt::Display for InterpolateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterpolateError::Missing(name) => {
                write!(f, "environment variable {name:?} is not set")
            }
            InterpolateError::Unterminated => {
                write!(
                    f,
                    "unterminated \"${{\" (write \"$${{\" for a literal \"${{\")"
                )
            }
            InterpolateError::InvalidName(name) => write!(
                f,
                "invalid environment variable name {name:?} (letters, digits and _, not starting \
                 with a digit)"
            ),
        }
    }
}

/// Expands every `${NAME}` in `raw` and turns `$${` into `${`.
pub(crate) fn expand(raw: &str, env: Env<'_>) -> Result<Expanded, InterpolateError> {
    let mut value = String::with_capacity(raw.len());
    let mut from_env = false;
    let mut rest = raw;
    while let Some(at) = rest.find('$') {
        value.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$${") {
            value.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or(InterpolateError::Unterminated)?;
            let name = &tail[..end];
            if !is_valid_name(name) {
                return Err(InterpolateError::InvalidName(name.to_string()));
            }
            let found = env(name).ok_or_else(|| InterpolateError::Missing(name.to_string()))?;
            value.push_str(&found);
            from_env = true;
            rest = &tail[end + 1..];
        } else {
            value.push('$');
            rest = &after[1..];
        }
    }
    value.push_str(rest);
    Ok(Expanded {
        raw: raw.to_string(),
        value,
        from_env,
    })
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("s3cret".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn run(raw: &str) -> Result<String, InterpolateError> {
        expand(raw, &env).map(|e| e.value)
    }

    #[test]
    fn substitutes_variables() {
        assert_eq!(run("https://x/v3/${KEY}").unwrap(), "https://x/v3/s3cret");
        assert_eq!(run("${KEY}${KEY}").unwrap(), "s3crets3cret");
        assert_eq!(run("a${EMPTY}b").unwrap(), "ab");
        assert!(expand("${KEY}", &env).unwrap().from_env);
    }

    #[test]
    fn plain_text_and_lone_dollars_are_kept() {
        let e = expand("p$a$$word$", &env).unwrap();
        assert_eq!(e.value, "p$a$$word$");
        assert!(!e.from_env);
    }

    #[test]
    fn double_dollar_escapes_a_literal_placeholder() {
        let e = expand("$${KEY} and ${KEY}", &env).unwrap();
        assert_eq!(e.value, "${KEY} and s3cret");
        assert_eq!(run("$${").unwrap(), "${");
        assert!(!expand("$${NOPE}", &env).unwrap().from_env);
    }

    #[test]
    fn missing_variable_is_named() {
        let err = run("x${NOPE}").unwrap_err();
        assert_eq!(err, InterpolateError::Missing("NOPE".into()));
        assert_eq!(err.to_string(), "environment variable \"NOPE\" is not set");
    }

    #[test]
    fn unterminated_placeholder_is_an_error() {
        assert_eq!(run("abc${KEY").unwrap_err(), InterpolateError::Unterminated);
        assert!(run("${").unwrap_err().to_string().contains("unterminated"));
    }

    #[test]
    fn invalid_names_are_errors() {
        for name in ["", "1A", "A-B", "A B", "a.b"] {
            let err = run(&format!("${{{name}}}")).unwrap_err();
            assert_eq!(err, InterpolateError::InvalidName(name.into()), "{name}");
        }
        assert_eq!(
            run("${_a1}").unwrap_err(),
            InterpolateError::Missing("_a1".into())
        );
    }

    #[test]
    fn quote_scheme_hides_expanded_values() {
        let quote = |raw: &str| expand(raw, &env).unwrap().quote_scheme("ftp");
        assert_eq!(quote("ftp://${KEY}@h"), "\"ftp\"");
        assert_eq!(quote("ftp://h"), "\"ftp\"");
        assert_eq!(quote("${KEY}ftp://h"), "in \"${KEY}ftp://h\"");
        assert_eq!(quote("f${EMPTY}tp://h"), "in \"f${EMPTY}tp://h\"");
    }
}
