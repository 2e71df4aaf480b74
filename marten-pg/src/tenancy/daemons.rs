//! The async daemon of a database-per-tenant store: one [`Daemon`] per tenant database,
//! each with the progression table of its own database, so one tenant's poison event,
//! lag or rebuild never holds up another's; and the rebuild of one tenant's projection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use marten_core::{Error, Result, Tenancy, TenantId};

use super::TenantedStore;
use crate::daemon::{Daemon, DaemonOptions};

/// The running daemons of a [`TenantedStore`]: one per tenant database known when they
/// were started (tenants sharing a database share its daemon), and the databases whose
/// daemon could not start because they did not open ([`failed`](Self::failed); start them
/// later with [`retry_failed`](Self::retry_failed)). Stops when
/// [`stop`](TenantDaemons::stop) is called or it is dropped.
pub struct TenantDaemons {
    /// The store they run for (to open the failed databases again).
    store: TenantedStore,
    /// The options every daemon runs with.
    options: DaemonOptions,
    /// Each database's daemon, with the tenants it serves.
    daemons: Vec<(Vec<TenantId>, Daemon)>,
    /// Each database that did not open, with the tenants it serves and its error.
    failed: Vec<Failed>,
}

/// A tenant database whose daemon did not start.
struct Failed {
    tenants: Vec<TenantId>,
    url: Arc<str>,
    error: Error,
}

impl TenantedStore {
    /// Starts a daemon (every async projection of the store's registrations) on the
    /// database of every known tenant (static and lookup table), opening the databases
    /// not open yet. A daemon holds its database's store, so the open-database bound
    /// never closes it while it runs. Tenants added later are not picked up: stop and
    /// start again (or start a daemon on [`store_for`](Self::store_for) of the new one).
    ///
    /// A database that does not open (down, unreachable, a schema it may not make) does
    /// not keep the others' daemons from starting: it is listed, with its tenants and its
    /// error (naming a tenant), in [`TenantDaemons::failed`], logged as a warning, and
    /// started by [`TenantDaemons::retry_failed`]. Fails only when the tenants cannot be
    /// read (the master table).
    pub async fn start_daemons(&self, options: DaemonOptions) -> Result<TenantDaemons> {
        let mut by_database: BTreeMap<Arc<str>, Vec<TenantId>> = BTreeMap::new();
        for (tenant, url) in self.all_tenants().await? {
            by_database.entry(url).or_default().push(tenant);
        }
        let mut daemons = TenantDaemons {
            store: self.clone(),
            options,
            daemons: Vec::with_capacity(by_database.len()),
            failed: Vec::new(),
        };
        for (url, mut tenants) in by_database {
            tenants.sort();
            daemons.start(tenants, url).await;
        }
        Ok(daemons)
    }

    /// Rebuilds `projection` for `tenant` alone, in its database; other databases are not
    /// touched. With conjoined events only the tenant's slot and documents are (see
    /// [`rebuild_tenant`](crate::daemon::rebuild_tenant)): tenants that share its
    /// database keep theirs, and a projection that writes documents shared by every tenant
    /// of the database (a type that is not conjoined) is refused with
    /// [`Error::Configuration`], nothing changed (rebuild the database's whole projection
    /// with [`rebuild`](crate::daemon::rebuild) on [`store_for`](Self::store_for)). With
    /// single-tenant events the database's whole projection is (see
    /// [`rebuild`](crate::daemon::rebuild)): its documents are every tenant's of that
    /// database.
    pub async fn rebuild(
        &self,
        tenant: impl TryInto<TenantId, Error = Error>,
        projection: &str,
    ) -> Result<()> {
        let tenant = tenant.try_into()?;
        let url = self.resolve(&tenant).await?;
        let store = self.open(&tenant, &url).await?.for_tenant(&tenant)?;
        match store.events_tenancy() {
            Tenancy::Conjoined => {
                crate::daemon::rebuild_tenant(&store, projection, tenant.as_str()).await
            }
            Tenancy::Single => crate::daemon::rebuild(&store, projection).await,
        }
    }
}

impl TenantDaemons {
    /// Starts the daemon of the database at `url`, serving `tenants` (sorted, not empty),
    /// or lists it as failed.
    async fn start(&mut self, tenants: Vec<TenantId>, url: Arc<str>) {
        let Some(first) = tenants.first() else {
            return;
        };
        match self.store.open(first, &url).await {
            Ok(store) => {
                let daemon = Daemon::start(&store, self.options.clone());
                self.daemons.push((tenants, daemon));
            }
            Err(error) => {
                tracing::warn!(
                    tenants = ?tenants,
                    error = %marten_core::WithSources(&error),
                    "the daemon of a tenant database did not start: it did not open"
                );
                self.failed.push(Failed {
                    tenants,
                    url,
                    error,
                });
            }
        }
    }

    /// The tenants each running daemon serves, one list per database.
    pub fn tenants(&self) -> impl Iterator<Item = &[TenantId]> {
        self.daemons.iter().map(|(t, _)| t.as_slice())
    }

    /// The databases whose daemon did not start because they did not open: the tenants
    /// each serves, and its error (which names one of them, see
    /// [`TenantedStore::store_for`]).
    pub fn failed(&self) -> impl Iterator<Item = (&[TenantId], &Error)> {
        self.failed.iter().map(|f| (f.tenants.as_slice(), &f.error))
    }

    /// Tries again to open the databases whose daemon did not start, and starts the
    /// daemon of each that opens; those that fail again stay in [`failed`](Self::failed)
    /// with their new error. How many daemons it started.
    pub async fn retry_failed(&mut self) -> usize {
        let before = self.daemons.len();
        for failed in std::mem::take(&mut self.failed) {
            self.start(failed.tenants, failed.url).await;
        }
        self.daemons.len() - before
    }

    /// Waits until the projections of every running daemon have caught up, within
    /// `timeout` in all (databases in [`failed`](Self::failed) have none and are not
    /// waited for); the first failure (a stopped runner, the timeout) is returned.
    pub async fn wait_for_non_stale(&self, timeout: Duration) -> Result<()> {
        // A timeout past the clock's range waits a century (no overflow).
        let deadline = crate::daemon::deadline_after(timeout);
        for (_, daemon) in &self.daemons {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            daemon.wait_for_non_stale(left).await?;
        }
        Ok(())
    }

    /// Stops every daemon and returns the first error one stopped with.
    pub async fn stop(self) -> Result<()> {
        let mut first = Ok(());
        for (_, daemon) in self.daemons {
            let stopped = daemon.stop().await;
            if first.is_ok() {
                first = stopped;
            }
        }
        first
    }
}
