//! Stored names (event names, aliases, tag names) must not be empty or blank and must not
//! hold control characters: NUL cannot be stored in PostgreSQL's text, the others would be
//! invisible wherever stored names are listed. Every mistake is reported at once.

use marten::{Event, Tag};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Event, Serialize, Deserialize)]
#[event(name = "\0")]
struct Nul {}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "")]
struct Empty {}

#[derive(Event, Serialize, Deserialize)]
#[event(name = " \t")]
struct Blank {}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "line\nadded")]
struct Newline {}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "deleted\u{7f}", aliases = ["ok", "old\u{9b}", "prior\0"])]
struct ControlsInNameAndAliases {}

#[derive(Event, Serialize, Deserialize)]
struct TaggedBadly {
    #[tag(name = "room\0")]
    room: String,
}

#[derive(Tag, Serialize, Deserialize)]
#[tag(name = "")]
struct CourseId(Uuid);

fn main() {}
