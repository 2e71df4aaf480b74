//! Counts the deadlocks marten meets in a test binary: every deadlock a save loses is
//! logged ("lost a deadlock") and sent again; [`deadlocks`] installs a subscriber that
//! counts those lines, so a test can assert that racing saves met none.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Deadlocks marten met in this process (its "lost a deadlock" log lines).
pub fn deadlocks() -> &'static AtomicUsize {
    static COUNT: OnceLock<AtomicUsize> = OnceLock::new();
    let count = COUNT.get_or_init(|| AtomicUsize::new(0));
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(CountDeadlocks);
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
    });
    count
}

struct CountDeadlocks;

struct Message(bool);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}").contains("lost a deadlock") {
            self.0 = true;
        }
    }
}

impl<S: Subscriber> Layer<S> for CountDeadlocks {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut m = Message(false);
        event.record(&mut m);
        if m.0 {
            deadlocks().fetch_add(1, Ordering::SeqCst);
        }
    }
}
