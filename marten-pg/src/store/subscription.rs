//! The builder's registration of subscriptions (see [`crate::subscriptions`]).

use std::sync::Arc;

use super::DocumentStoreBuilder;
use crate::subscriptions::runner::AsyncSubscription;
use crate::subscriptions::Subscription;

impl DocumentStoreBuilder {
    /// Registers a [`Subscription`]: the async daemon hands it the events its filter lets
    /// through, with a checkpoint of its own (per tenant with conjoined events), as it
    /// runs an async projection. Its name shares the async projections' namespace: a
    /// name registered twice is an error of `build`; several subscriptions of one type
    /// run side by side under their own names.
    pub fn subscription<S: Subscription>(mut self, subscription: S) -> Self {
        let name = subscription.name().to_owned();
        self.register_named(&name, Arc::new(AsyncSubscription::new(subscription)));
        self
    }
}
