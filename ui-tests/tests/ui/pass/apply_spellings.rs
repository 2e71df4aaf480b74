//! One event type spelled differently (`Added`, `crate::events::Added`, an alias) in
//! methods of different roles: one method per role and event type, so this is fine.

mod events {
    use marten::Event;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize)]
    pub struct Added {
        pub n: i64,
    }
}

use events::Added;

type Plus = events::Added;

#[derive(Default)]
struct Counter {
    n: i64,
}

#[marten::apply]
impl Counter {
    fn create(e: &Added) -> Self {
        Counter { n: e.n }
    }

    fn apply(&mut self, e: &crate::events::Added) {
        self.n += e.n;
    }

    fn should_delete(&self, e: &Plus) -> bool {
        self.n + e.n == 0
    }
}

fn main() {
    let _ = <Counter as marten::Apply>::USES_METADATA;
}
