//! "Did you mean" suggestions for misspelt names.

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub fn did_you_mean<'a, I, S>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str> + 'a,
{
    let lower = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| {
            let c = c.as_ref().to_string();
            (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c)
        })
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        assert_eq!(
            did_you_mean("capcity", ["capacity", "strategy"]).as_deref(),
            Some("capacity")
        );
        assert_eq!(
            did_you_mean("stratgey", ["capacity", "strategy"]).as_deref(),
            Some("strategy")
        );
        assert_eq!(
            did_you_mean("application", ["Application"]).as_deref(),
            Some("Application")
        );
        assert_eq!(did_you_mean("zzz", ["capacity"]), None);
    }
}
