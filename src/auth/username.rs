//! Usernames, in one canonical form: NFKC-normalised and lower-cased, so
//! that "Alice", "ALICE" and a full-width "Ａｌｉｃｅ" are one account and
//! one throttling key.

use unicode_normalization::UnicodeNormalization as _;

pub const MAX_LEN: usize = 150;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// Letters, digits and `@ . + - _` (Django's rule), 1 to 150 of them.
    ///
    /// # Errors
    /// Every rule the name breaks, as reason codes.
    pub fn parse(raw: &str) -> Result<Self, Vec<&'static str>> {
        let canonical: String = raw.trim().nfkc().flat_map(char::to_lowercase).collect();
        let mut failed = Vec::new();
        let len = canonical.chars().count();
        if len == 0 {
            failed.push("EMPTY");
        }
        if len > MAX_LEN {
            failed.push("TOO_LONG");
        }
        if !canonical
            .chars()
            .all(|c| c.is_alphanumeric() || "@.+-_".contains(c))
        {
            failed.push("INVALID_CHARACTERS");
        }
        if failed.is_empty() {
            Ok(Self(canonical))
        } else {
            Err(failed)
        }
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_width_variants_are_one_name() {
        let canonical = Username::parse("alice").unwrap();
        assert_eq!(Username::parse("Alice").unwrap(), canonical);
        assert_eq!(Username::parse(" ALICE ").unwrap(), canonical);
        assert_eq!(Username::parse("Ａｌｉｃｅ").unwrap(), canonical);
    }

    #[test]
    fn allowed_punctuation_passes() {
        assert!(Username::parse("a.b+c-d_e@example.com").is_ok());
        assert!(Username::parse("zoë").is_ok());
    }

    #[test]
    fn bad_names_report_every_rule() {
        assert_eq!(Username::parse("").unwrap_err(), vec!["EMPTY"]);
        assert_eq!(
            Username::parse("a b").unwrap_err(),
            vec!["INVALID_CHARACTERS"]
        );
        assert_eq!(
            Username::parse(&"x;".repeat(80)).unwrap_err(),
            vec!["TOO_LONG", "INVALID_CHARACTERS"]
        );
    }
}
