//! The tag lock of a save: one statement, placed before every other, that asserts the
//! captured tag versions and bumps every tag the save writes, in (type, value) order,
//! among the tag versions of the save's tenant (see [`EventTenant::tags`]).
//! Implements the unit of work's `Operation`.

use futures_util::future::BoxFuture;
use marten_core::{EventTag, Rejection, RejectionKind, Result, StreamIdentity};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::connection::{Db, SqlText};

use super::{reading, tag_version};
use crate::events::EventTenant;
use crate::schema::events_schema;
use crate::tables::event_tags::TAG_LOCK;
use crate::tables::events::{EventSql, TAG_VERSIONS_TABLE};
use crate::unit_of_work::append::{StreamAppend, TagCheck};
use crate::unit_of_work::{Operation, TagsFirst, Target};

/// The tag lock of a save (see the module docs), placed before every other statement.
pub(crate) struct TagLock {
    identity: StreamIdentity,
    tenant: EventTenant,
    /// The save's tags in (type, value) order, their captured versions and whether an
    /// append writes each: what the statement asserts and bumps, or what the save's one
    /// append carries instead ([`TagLock::into_check`]).
    tags: TagCheck,
    written: Vec<(String, String)>,
    rejected: bool,
}

impl TagLock {
    /// The lock for a save's boundaries and tagged appends; `None` when nothing needs
    /// one, and when nothing is appended (a boundary protects appends: without one there
    /// is nothing to assert). A single tagged append bumps its own tags before its
    /// stream's row, so it needs none unless `other_rows`: the save writes another
    /// stream's row too (a stream lock, another append or start, an archive or delete),
    /// possibly before the append's statement, and its tags must be locked before any
    /// row, the order of every tagged save. The tenant of the tag versions is the
    /// appends' (all of one session).
    pub(crate) fn for_save<'a>(
        identity: StreamIdentity,
        boundaries: &[(EventTag, i64)],
        appends: impl Iterator<Item = &'a StreamAppend> + Clone,
        other_rows: bool,
    ) -> Option<TagLock> {
        let tagged = appends.clone().filter(|a| !a.tag_types.is_empty());
        // Decided before anything is allocated: most saves need no lock.
        if boundaries.is_empty() {
            let several = tagged.clone().nth(1).is_some();
            let one = tagged.clone().next().is_some();
            let needed = several || (one && other_rows);
            if !needed {
                return None;
            }
        }
        let tenant = appends.clone().next()?.tenant.clone();
        // Each tag: its captured version (boundaries) and whether an append writes it.
        let mut all: std::collections::BTreeMap<EventTag, (Option<i64>, bool)> =
            std::collections::BTreeMap::new();
        for a in tagged {
            for (t, v) in a.tag_types.iter().zip(&a.tag_values) {
                all.insert(EventTag::named(t.clone(), v), (None, true));
            }
        }
        // A tag two boundaries of the save captured is asserted at the lower version:
        // if it moved between the reads, the decision made on the older read must fail.
        for (tag, captured) in boundaries {
            let entry = &mut all.entry(tag.clone()).or_insert((None, false)).0;
            *entry = Some(entry.map_or(*captured, |c| c.min(*captured)));
        }
        let mut tags = TagCheck {
            types: Vec::with_capacity(all.len()),
            values: Vec::with_capacity(all.len()),
            captured: Vec::with_capacity(all.len()),
            appended: Vec::with_capacity(all.len()),
            count: all.len() as i64,
        };
        for (tag, (captured, appended)) in all {
            tags.types.push(tag.tag_type);
            tags.values.push(tag.value);
            tags.captured.push(captured);
            tags.appended.push(appended);
        }
        Some(TagLock {
            identity,
            tenant,
            tags,
            written: Vec::new(),
            rejected: false,
        })
    }

    /// The lock of this lock's tags, with those of `commands` (the tags of the streams the
    /// save archives or deletes) in one order, none asserted nor bumped: sent before this
    /// lock when the save has both (see [`TagsFirst`]), or by the save's planning before
    /// it reads streams under lock.
    pub(crate) fn tags_first(&self, commands: Option<TagsFirst>) -> TagsFirst {
        let (types, values) = (&self.tags.types, &self.tags.values);
        match commands {
            Some(commands) => commands.with_tags(types, values),
            None => TagsFirst::of_tags(self.identity, self.tenant.clone(), types, values),
        }
    }

    /// The lock as a check to send in the statement of the save's one append
    /// ([`StreamAppend::take_check`]) instead of as a statement of its own.
    pub(crate) fn into_check(self) -> TagCheck {
        self.tags
    }
}

impl Operation for TagLock {
    fn sql(&self) -> SqlText<'_> {
        SqlText::Static(TAG_LOCK)
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.tags.types,
            &self.tags.values,
            &self.tags.captured,
            &self.tags.count,
            self.tenant.tags(),
        ]
    }

    fn target(&self) -> Target {
        let schema = events_schema(self.identity, self.tenant.tenancy());
        Target::new("tag", TAG_VERSIONS_TABLE, schema)
    }

    fn checked(&self) -> bool {
        true
    }

    fn accept(&mut self, rows: &[Row]) -> Result<()> {
        let Some(row) = rows.first() else {
            return Ok(());
        };
        let types: Option<Vec<String>> = row.try_get(0).map_err(reading)?;
        let values: Option<Vec<String>> = row.try_get(1).map_err(reading)?;
        self.written = types
            .unwrap_or_default()
            .into_iter()
            .zip(values.unwrap_or_default())
            .collect();
        self.rejected = (self.written.len() as i64) < self.tags.count;
        Ok(())
    }

    fn has_rejections(&self) -> bool {
        self.rejected
    }

    fn reset(&mut self) {
        self.written.clear();
        self.rejected = false;
    }

    fn explain<'a>(&'a self, client: Db<'a>) -> BoxFuture<'a, Result<Vec<Rejection>>> {
        Box::pin(async move {
            let sql = EventSql::of(self.identity, self.tenant.tenancy());
            let params = [
                &self.tags.types as &(dyn ToSql + Sync),
                &self.tags.values,
                self.tenant.tags(),
            ];
            let rows = client
                .query(sql.tag_versions.as_str(), &params)
                .await
                .map_err(reading)?;
            let mut out = Vec::new();
            for i in 0..self.tags.types.len() {
                let key = (self.tags.types[i].clone(), self.tags.values[i].clone());
                let Some(expected) = self.tags.captured[i] else {
                    continue;
                };
                if self.written.contains(&key) {
                    continue;
                }
                let mut actual = 0;
                for r in &rows {
                    if r.try_get::<_, String>(0).map_err(reading)? == key.0
                        && r.try_get::<_, String>(1).map_err(reading)? == key.1
                    {
                        let tag = EventTag::named(key.0.clone(), &key.1);
                        actual = tag_version(&tag, r.try_get(2).map_err(reading)?)?;
                    }
                }
                out.push(Rejection::new(
                    "tag",
                    marten_core::IdKey::String(key.1.clone()),
                    RejectionKind::DcbConcurrency {
                        tag_type: key.0,
                        expected,
                        actual,
                    },
                ));
            }
            Ok(out)
        })
    }
}
