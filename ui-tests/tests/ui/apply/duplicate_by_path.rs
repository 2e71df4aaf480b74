//! Two methods of one role for one event type spelled differently (`Added`,
//! `crate::events::Added`, an alias): the macro cannot tell by the tokens, the compiler
//! can, and refuses the second (only the first would ever be called).

mod events {
    use marten::Event;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize)]
    pub struct Added {
        pub n: i64,
    }

    #[derive(Event, Serialize, Deserialize)]
    pub struct Removed {
        pub n: i64,
    }
}

use events::{Added, Removed};

type Taken = events::Removed;

#[derive(Default)]
struct Counter {
    n: i64,
}

#[marten::apply]
impl Counter {
    fn create(e: &Added) -> Self {
        Counter { n: e.n }
    }

    fn apply(&mut self, e: &Added) {
        self.n += e.n;
    }

    fn apply_again(&mut self, e: &crate::events::Added) {
        self.n += e.n;
    }

    fn apply(&mut self, e: &Removed) {
        self.n -= e.n;
    }

    fn apply_taken(self, e: &Taken) -> Self {
        Counter { n: self.n - e.n }
    }

    fn should_delete(&self, _e: &Removed) -> bool {
        self.n == 0
    }
}

fn main() {}
