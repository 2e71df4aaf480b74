//! The match of a conjoined table's rows on their tenant, as the head of a `WHERE`
//! (documents and events alike). Pure.

/// `d.tenant_id = {p}`: the rows of the tenant bound as `p` (a parameter, cast as its
/// statement needs), for a statement whose `WHERE` has other conditions after it when
/// `filtered`. Those get the tenant's test a second time, first: PostgreSQL takes
/// `tenant_id = $n` into its equivalence classes and puts it back behind every other
/// condition, so a scan that filters (rather than reading the tenant's range of an index)
/// would test every tenant's rows against the other conditions before their tenant. The
/// copy is a `CASE`, which it neither moves nor counts as more than halving the rows.
pub fn tenant_match(p: &str, filtered: bool) -> String {
    let key = format!("d.tenant_id = {p}");
    if filtered {
        format!("{key} AND CASE WHEN {key} THEN true ELSE false END")
    } else {
        key
    }
}

#[cfg(test)]
mod tests {
    use super::tenant_match;

    #[test]
    fn a_filtered_statement_tests_the_tenant_first_and_again_as_a_key() {
        assert_eq!(tenant_match("$1", false), "d.tenant_id = $1");
        assert_eq!(
            tenant_match("$3::text", true),
            "d.tenant_id = $3::text AND CASE WHEN d.tenant_id = $3::text THEN true ELSE false END"
        );
    }
}
