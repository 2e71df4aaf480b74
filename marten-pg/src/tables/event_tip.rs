//! The assertion of a stream's last event that an expected-version append carries when
//! it was decided on a cached aggregate (`write_to_aggregate`): every append shape has an
//! `expected_tip` statement, its stream-row update taking the row only if the stream's
//! event at its version is the id bound after every other parameter. A stream deleted
//! and started again up to the cached version has other events, so the append is
//! rejected, and the command decides again on a fresh read.

use crate::tables::events::{StreamRows, EVENTS_TABLE};

/// The expected-version statement that `wrap` makes of `rows`, asserting the stream's
/// last event too, whose id is bound after every other parameter.
pub(crate) fn tipped(rows: &StreamRows, wrap: impl Fn(&str) -> String) -> String {
    let last = last_param(&wrap(&rows.expected));
    wrap(&rows.expected_tip(last + 1))
}

/// The highest `$n` a statement binds.
fn last_param(sql: &str) -> usize {
    sql.split('$')
        .skip(1)
        .filter_map(|rest| {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            rest[..digits].parse().ok()
        })
        .max()
        .unwrap_or(0)
}

impl StreamRows {
    /// [`StreamRows::expected`], taking the row only if the stream's event at its version
    /// is `$tip_param`: a decision made on a cached aggregate (`write_to_aggregate`)
    /// asserts that the stream is still the one the cache saw, not one deleted and
    /// started again up to the same version. Evaluated on the row the statement locks.
    pub(crate) fn expected_tip(&self, tip_param: usize) -> String {
        format!(
            "{} AND EXISTS (SELECT 1 FROM {EVENTS_TABLE} e WHERE {}e.stream_id = st.id \
             AND e.version = st.version AND e.id = ${tip_param}::uuid)",
            self.expected, self.tip_scope
        )
    }
}

/// See [`StreamRows::tip_scope`].
pub(crate) fn tip_scope(conjoined: bool) -> &'static str {
    if conjoined {
        "e.tenant_id = st.tenant_id AND "
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::events::EventSql;
    use marten_core::{StreamIdentity, Tenancy};

    #[test]
    fn every_shape_asserts_the_tip_bound_after_its_other_parameters() {
        for tenancy in [Tenancy::Single, Tenancy::Conjoined] {
            for identity in [StreamIdentity::String, StreamIdentity::Uuid] {
                let sql = EventSql::of(identity, tenancy);
                let shapes = [
                    &sql.many,
                    &sql.one,
                    &sql.tagged,
                    &sql.many_alone,
                    &sql.one_alone,
                    &sql.one_alone_bare,
                    &sql.one_alone_lean,
                    &sql.sequenced,
                    &sql.tagged_sequenced,
                    &sql.checked,
                ];
                for shape in shapes {
                    let (plain, tipped) = (&shape.expected, &shape.expected_tip);
                    let tip = last_param(plain) + 1;
                    assert_eq!(last_param(tipped), tip, "{tipped}");
                    assert!(tipped.contains(&format!("e.id = ${tip}::uuid")), "{tipped}");
                    assert_eq!(
                        tipped.contains("e.tenant_id = st.tenant_id"),
                        tenancy == Tenancy::Conjoined,
                        "{tipped}"
                    );
                }
            }
        }
    }
}
