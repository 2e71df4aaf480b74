//! The types the scale benchmark stores: two event types (one tagged), the aggregate the
//! daemon projects, the state a tag boundary folds, and a document.

use marten::prelude::*;
use serde::{Deserialize, Serialize};

/// The tag of the tagged streams' events.
#[derive(Tag, Serialize, Deserialize, Clone, Copy, Debug)]
pub struct CourseId(pub Uuid);

/// The course numbered `n` (deterministic, so the measurements can pick any seeded one).
pub fn course_id(n: u64) -> Uuid {
    Uuid::from_u128(0x0005_ca1e_0000_0000_0000_0000_0000_0000 + n as u128)
}

/// The untagged events (nine streams in ten).
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "order_placed")]
pub struct OrderPlaced {
    pub customer: String,
    pub sku: String,
    pub cents: i64,
    pub express: bool,
    pub note: String,
}

/// The tagged events (every tenth stream).
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "student_enrolled")]
pub struct StudentEnrolled {
    #[tag]
    pub course_id: CourseId,
    pub student: Uuid,
    pub name: String,
}

/// The daemon's projection: one document per stream.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
pub struct Tally {
    pub id: Uuid,
    pub version: i64,
    pub orders: i64,
    pub cents: i64,
    pub enrolments: i64,
}

#[marten::apply]
impl Tally {
    fn apply_placed(&mut self, e: &OrderPlaced) {
        self.orders += 1;
        self.cents += e.cents;
    }
    fn apply_enrolled(&mut self, _e: &StudentEnrolled) {
        self.enrolments += 1;
    }
}

/// What a tag boundary read folds.
#[derive(Default)]
pub struct Enrolment {
    pub count: usize,
}

#[marten::apply]
impl Enrolment {
    fn apply(&mut self, _e: &StudentEnrolled) {
        self.count += 1;
    }
}

/// The documents loaded by id.
#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(optimistic)]
pub struct Customer {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub city: String,
    pub orders: i64,
    pub tags: Vec<String>,
}

impl Customer {
    /// The document numbered `n`.
    pub fn numbered(n: u64) -> Self {
        Customer {
            id: Uuid::now_v7(),
            name: format!("Customer Number {n}"),
            email: format!("customer{n}@example.com"),
            city: ["Lyon", "Porto", "Oslo", "Quito"][n as usize % 4].to_owned(),
            orders: (n % 97) as i64,
            tags: vec!["retail".to_owned(), format!("cohort-{}", n % 12)],
        }
    }
}
