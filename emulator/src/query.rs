//! Query-string access with ARM's leniency: parameter names are matched without case.

/// A decoded query string.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: &str) -> Query {
        Query {
            pairs: form_urlencoded::parse(raw.as_bytes())
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect(),
        }
    }

    /// Every pair, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_without_case_and_values_are_decoded() {
        let query = Query::parse(
            "API-Version=2025-05-01&resource=https%3A%2F%2Fmanagement.azure.com%2F&$skipToken=5",
        );
        assert_eq!(query.get("api-version"), Some("2025-05-01"));
        assert_eq!(query.get("resource"), Some("https://management.azure.com/"));
        assert_eq!(query.get("$skiptoken"), Some("5"));
        assert_eq!(query.get("missing"), None);
    }
}
