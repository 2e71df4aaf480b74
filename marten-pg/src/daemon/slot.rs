//! What one runner runs: a projection over every event, or (conjoined events) over one
//! tenant's events, and for a sharded projection (an aggregate or a multi-stream
//! projection, whose documents each belong to one shard) one shard of them. A slot names the
//! projection's progression row and advisory lock: the projection's name, `name#2/3`
//! for shard 2 of 3, `name@tenant` for a tenant's slot, `name#2/3@tenant` for both, so
//! each runner has its own position, owner epoch and lock, and one tenant's (or shard's)
//! poison event, lag or rebuild never holds up another's.
//!
//! Owns: the slot's name and the slots of a projection. May use: nothing else of the
//! daemon.

use std::fmt;

use marten_core::projection::shard::Shard;
use marten_core::tenant::DEFAULT_TENANT;
use marten_core::TenantId;

/// A projection, for every event or for one tenant's, whole or one shard of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Slot {
    /// The projection's name.
    pub(crate) projection: &'static str,
    /// The tenant whose events the slot projects (`None`: every event).
    pub(crate) tenant: Option<TenantId>,
    /// The shard the slot projects (`None`: the projection is not sharded).
    pub(crate) shard: Option<Shard>,
    /// The name of the slot's progression row (and lock).
    name: String,
}

/// Separates a projection's name from a tenant's in a slot's name (a projection's name is
/// a Rust type or a name without it, so the first one splits them).
const TENANT_SEPARATOR: char = '@';

/// The characters between a slot name's parts (see [`crate::projections::SLOT_SEPARATORS`]).
pub(crate) use crate::projections::SLOT_SEPARATORS;

impl Slot {
    /// The slot of `projection` over the events of `tenant` (or of every tenant).
    pub(crate) fn new(projection: &'static str, tenant: Option<TenantId>) -> Self {
        Slot::sharded(projection, tenant, None)
    }

    /// The slot of `shard` of `projection` (the whole projection for `None`) over the
    /// events of `tenant` (or of every tenant).
    pub(crate) fn sharded(
        projection: &'static str,
        tenant: Option<TenantId>,
        shard: Option<Shard>,
    ) -> Self {
        let mut name = label(projection, shard);
        if let Some(t) = &tenant {
            name = format!("{name}{TENANT_SEPARATOR}{t}");
        }
        Slot {
            projection,
            tenant,
            shard,
            name,
        }
    }

    /// The slots of `projection` split `count` ways (unsharded for 1) over `tenant`'s
    /// events.
    pub(crate) fn all(
        projection: &'static str,
        tenant: Option<&TenantId>,
        count: u32,
    ) -> Vec<Slot> {
        if count <= 1 {
            return vec![Slot::new(projection, tenant.cloned())];
        }
        Shard::all(count)
            .map(|s| Slot::sharded(projection, tenant.cloned(), Some(s)))
            .collect()
    }

    /// The name of the slot's progression row and advisory lock.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The name the daemon's hooks are told: the projection's, with the shard's suffix
    /// for a shard (`Tally#2/3`), so a trace tells the shards apart.
    pub(crate) fn label(&self) -> String {
        label(self.projection, self.shard)
    }

    /// How many ways the slot's projection is split (1: not sharded).
    pub(crate) fn count(&self) -> u32 {
        self.shard.map_or(1, Shard::count)
    }

    /// The tenant recorded in the slot's progression row and dead letters.
    pub(crate) fn tenant_column(&self) -> &str {
        self.tenant
            .as_ref()
            .map_or(DEFAULT_TENANT, TenantId::as_str)
    }
}

/// `projection`, with `#index/count` for a shard.
fn label(projection: &str, shard: Option<Shard>) -> String {
    match shard {
        Some(s) => format!("{projection}{s}"),
        None => projection.to_owned(),
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_slot_has_a_name_of_its_own() {
        let all = Slot::new("Tally", None);
        assert_eq!((all.name(), all.tenant_column()), ("Tally", DEFAULT_TENANT));
        let t = TenantId::new("acme@corp").unwrap();
        let one = Slot::new("Tally", Some(t));
        assert_eq!(
            (one.name(), one.tenant_column()),
            ("Tally@acme@corp", "acme@corp")
        );
    }

    #[test]
    fn the_names_the_builder_refuses_hold_every_separator_a_slot_name_uses() {
        let t = TenantId::new("red").unwrap();
        let shard = Slot::all("P", Some(&t), 2).pop().unwrap();
        let separators: Vec<char> = shard
            .name()
            .chars()
            .filter(|c| !c.is_alphanumeric() && *c != '/')
            .collect();
        assert_eq!(separators, ['#', '@'], "{}", shard.name());
        for c in separators {
            assert!(crate::projections::SLOT_SEPARATORS.contains(&c), "{c}");
        }
    }

    #[test]
    fn a_shards_slot_names_its_shard_before_its_tenant() {
        let t = TenantId::new("red").unwrap();
        let names: Vec<String> = Slot::all("Tally", Some(&t), 3)
            .iter()
            .map(|s| s.name().to_owned())
            .collect();
        assert_eq!(names, ["Tally#0/3@red", "Tally#1/3@red", "Tally#2/3@red"]);
        let one = Slot::all("Tally", None, 1);
        assert_eq!((one.len(), one[0].name(), one[0].count()), (1, "Tally", 1));
        assert_eq!(Slot::all("Tally", Some(&t), 2)[1].label(), "Tally#1/2");
    }
}
