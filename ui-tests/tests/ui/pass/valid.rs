use marten::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize)]
struct ByUuid {
    id: Uuid,
}

#[derive(Document, Serialize, Deserialize)]
#[concurrency(optimistic)]
struct ByI64 {
    id: i64,
}

#[derive(Document, Serialize, Deserialize)]
#[concurrency(numeric)]
#[document(table = "custom_table_1")]
struct ByI32 {
    id: i32,
}

#[derive(Document, Serialize, Deserialize)]
#[concurrency(off)]
struct ByString {
    #[document(id)]
    key: String,
    id: i64,
}

#[derive(Tag, Serialize, Deserialize)]
struct RoomId(Uuid);

#[derive(Event, Serialize, Deserialize)]
#[event(name = "booked_v2", aliases = ["booked", "reserved"])]
struct Booked {
    #[tag]
    room: RoomId,
    #[tag(name = "guest")]
    guest: String,
}

#[derive(Event, Serialize, Deserialize)]
enum Cancelled {
    ByGuest,
    ByHotel { reason: String },
}

#[derive(Aggregate, Serialize, Deserialize, Default)]
#[concurrency(numeric)]
struct Room {
    id: Uuid,
    #[aggregate(version)]
    revision: i64,
    bookings: u32,
}

#[marten::apply]
impl Room {
    fn apply(&mut self, _e: &Booked, meta: &EventEnvelope) {
        self.bookings += 1;
        let _ = meta.version;
    }

    fn apply(self, _e: &Cancelled) -> Result<Self, String> {
        Ok(Room { bookings: self.bookings.saturating_sub(1), ..self })
    }

    fn should_delete(&self, _e: &Cancelled) -> bool {
        self.bookings == 0
    }
}

fn uses(session: &mut LightweightSession) -> marten::Result<()> {
    session.store_with_version(ByI64 { id: 1 }, Uuid::nil())?;
    session.update_revision(ByI32 { id: 1 }, 2)?;
    session.store(ByString { key: "k".into(), id: 3 })?;
    session.store(ByUuid { id: Uuid::nil() })?;
    Ok(())
}

fn main() {
    let _ = uses;
    assert_eq!(<Booked as marten::Event>::EVENT_TYPE, "booked_v2");
    assert_eq!(<RoomId as marten::Tag>::TAG_TYPE, "room_id");
}
