//! What one runner runs: a projection over every event, or (conjoined events) over one
//! tenant's events. A slot names the projection's progression row and advisory lock:
//! the projection's name, or `name@tenant` for a tenant's slot, so each tenant's runner
//! has its own position, owner epoch and lock, and one tenant's poison event, lag or
//! rebuild never holds up another's.
//!
//! Owns: the slot's name. May use: nothing else of the daemon.

use std::fmt;

use marten_core::tenant::DEFAULT_TENANT;
use marten_core::TenantId;

/// A projection, for every event or for one tenant's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Slot {
    /// The projection's name.
    pub(crate) projection: &'static str,
    /// The tenant whose events the slot projects (`None`: every event).
    pub(crate) tenant: Option<TenantId>,
    /// The name of the slot's progression row (and lock).
    name: String,
}

/// Separates a projection's name from a tenant's in a slot's name (a projection's name is
/// a Rust type or a name without it, so the first one splits them).
const TENANT_SEPARATOR: char = '@';

impl Slot {
    /// The slot of `projection` over the events of `tenant` (or of every tenant).
    pub(crate) fn new(projection: &'static str, tenant: Option<TenantId>) -> Self {
        let name = match &tenant {
            Some(t) => format!("{projection}{TENANT_SEPARATOR}{t}"),
            None => projection.to_owned(),
        };
        Slot {
            projection,
            tenant,
            name,
        }
    }

    /// The name of the slot's progression row and advisory lock.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The tenant recorded in the slot's progression row and dead letters.
    pub(crate) fn tenant_column(&self) -> &str {
        self.tenant
            .as_ref()
            .map_or(DEFAULT_TENANT, TenantId::as_str)
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
}
