//! The event types a store knows: stored type name -> how to deserialize it. A name is a
//! type's current name, one of its aliases (former names, read as they are), or the old
//! name an upcaster reads (an older shape, converted to the current type on read).

use rustc_hash::FxHashMap;
use std::any::TypeId;
use std::sync::Arc;

use marten_core::{AnyEvent, Error, Event, Result};

use marten_core::{DecodeFn, EventDecoder};
use serde::de::DeserializeOwned;

/// The sequence of an event read without it (a lean fold's rows): an error that names it
/// is given the real one by the reader (`read::with_sequence`).
pub(crate) const UNREAD_SEQUENCE: i64 = -1;

/// What a read does with an event whose type is not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnknownEvents {
    /// Fail with [`Error::UnknownEventType`] naming the type and sequence (the default).
    #[default]
    Error,
    /// Leave the event out of the result and log a warning.
    Skip,
}

/// An upcaster, type-erased: stored JSON of an old shape -> the current type, or why not.
type UpcastFn = Arc<dyn Fn(&[u8]) -> std::result::Result<Arc<dyn AnyEvent>, String> + Send + Sync>;

/// How a stored name reads.
#[derive(Clone)]
enum Decode {
    /// The type's current name or an alias: the stored JSON is the type.
    Plain(DecodeFn),
    /// An upcaster's old name: the stored JSON is an older shape.
    Upcast(UpcastFn),
}

/// What a stored name is to the type it reads as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Name,
    Alias,
    UpcastSource,
}

/// One registered stored name.
#[derive(Clone)]
struct Entry {
    /// The Rust type it reads as.
    type_id: TypeId,
    /// That type's name in Rust ([`std::any::type_name`]), for configuration errors.
    rust_type: &'static str,
    /// That type's current name.
    target: &'static str,
    role: Role,
    decode: Decode,
}

impl Entry {
    /// "the name of event type `app::Created`", for configuration errors (with the
    /// type's stored name when it is not the name in question).
    fn describe(&self) -> String {
        let (role, stored) = match self.role {
            Role::Name => ("the name of", String::new()),
            Role::Alias => ("an alias of", format!(" (stored as {:?})", self.target)),
            Role::UpcastSource => (
                "an upcaster's old name for",
                format!(" (stored as {:?})", self.target),
            ),
        };
        format!("{role} event type `{}`{stored}", self.rust_type)
    }
}

/// Registered event types.
#[derive(Default, Clone)]
pub(crate) struct EventRegistry {
    /// Keyed by the stored type name; read once per event read, so hashed with a fast
    /// non-cryptographic hasher (the names are the store's own registrations).
    by_name: FxHashMap<String, Entry>,
    pub(crate) unknown: UnknownEvents,
}

impl EventRegistry {
    /// Registers `E` under its name and its aliases; a name that is already another
    /// type's name or alias, or an upcaster's old name, is a configuration error naming
    /// both.
    pub(crate) fn register<E: Event>(&mut self) -> Result<()> {
        self.register_decoder(&EventDecoder::of::<E>())
    }

    /// Registers the type of `d` under its name and its aliases, all or none: a name
    /// that is already another type's name or alias, or an upcaster's old name, is a
    /// configuration error naming the stored name and both Rust types. The same type
    /// again is no change.
    fn register_decoder(&mut self, d: &EventDecoder) -> Result<()> {
        let names = std::iter::once((d.name, Role::Name))
            .chain(d.aliases.iter().map(|a| (*a, Role::Alias)));
        let entries: Vec<(&str, Entry)> = names
            .map(|(name, role)| {
                let entry = Entry {
                    type_id: d.type_id,
                    rust_type: d.type_name,
                    target: d.name,
                    role,
                    decode: Decode::Plain(d.decode),
                };
                (name, entry)
            })
            .collect();
        for (name, entry) in &entries {
            self.check_free(name, entry)?;
        }
        for (name, entry) in entries {
            self.by_name.insert(name.to_owned(), entry);
        }
        Ok(())
    }

    /// Fails when `name` is registered as something other than `entry`.
    fn check_free(&self, name: &str, entry: &Entry) -> Result<()> {
        match self.by_name.get(name) {
            Some(existing)
                if existing.type_id != entry.type_id
                    || existing.role != entry.role
                    || entry.role == Role::UpcastSource =>
            {
                Err(Error::Configuration(format!(
                    "event type name {name:?} is {} and {}: give each type and alias its own \
                     name (`#[event(name = \"...\")]`), and upcast only from names no type \
                     reads",
                    existing.describe(),
                    entry.describe()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Registers an upcaster from the JSON stored under `from` to `New` (and `New`
    /// itself): reads of `from` parse the stored JSON, pass it to `upcast` and
    /// deserialize what it returns as `New`.
    pub(crate) fn upcast_json<New, F>(&mut self, from: &str, upcast: F) -> Result<()>
    where
        New: Event,
        F: Fn(serde_json::Value) -> std::result::Result<serde_json::Value, String>
            + Send
            + Sync
            + 'static,
    {
        let decode = move |json: &[u8]| -> std::result::Result<Arc<dyn AnyEvent>, String> {
            let old: serde_json::Value = serde_json::from_slice(json)
                .map_err(|e| format!("the stored data is not JSON: {e}"))?;
            let new = serde_json::from_value::<New>(upcast(old)?)
                .map_err(|e| format!("the upcaster's result does not deserialize: {e}"))?;
            Ok(Arc::new(new))
        };
        self.add_upcaster::<New>(from, Arc::new(decode))
    }

    /// Registers an upcaster from `Old` stored under `from` to `New` (and `New` itself):
    /// reads of `from` deserialize the stored JSON as `Old` and convert it with `upcast`.
    pub(crate) fn upcast_typed<Old, New, F>(&mut self, from: &str, upcast: F) -> Result<()>
    where
        Old: DeserializeOwned + 'static,
        New: Event,
        F: Fn(Old) -> New + Send + Sync + 'static,
    {
        let decode = move |json: &[u8]| -> std::result::Result<Arc<dyn AnyEvent>, String> {
            let old = serde_json::from_slice::<Old>(json).map_err(|e| {
                format!(
                    "the stored data does not deserialize as {}: {e}",
                    std::any::type_name::<Old>()
                )
            })?;
            Ok(Arc::new(upcast(old)))
        };
        self.add_upcaster::<New>(from, Arc::new(decode))
    }

    fn add_upcaster<New: Event>(&mut self, from: &str, decode: UpcastFn) -> Result<()> {
        self.register::<New>()?;
        let entry = Entry {
            type_id: TypeId::of::<New>(),
            rust_type: std::any::type_name::<New>(),
            target: New::EVENT_TYPE,
            role: Role::UpcastSource,
            decode: Decode::Upcast(decode),
        };
        if from.trim().is_empty() {
            return Err(Error::Configuration(format!(
                "an upcaster to event type {:?} has an empty old name",
                New::EVENT_TYPE
            )));
        }
        self.check_free(from, &entry)?;
        self.by_name.insert(from.to_owned(), entry);
        Ok(())
    }

    /// Registers the event types an apply-dispatch type handles, with their aliases, as
    /// [`EventRegistry::register`] does: a type whose name or alias is already another
    /// type's (or an upcaster's old name) is left out, and the first such clash is the
    /// configuration error (the other types are registered).
    pub(crate) fn register_decoders(&mut self, decoders: Vec<EventDecoder>) -> Result<()> {
        let mut first = Ok(());
        for d in &decoders {
            if let Err(e) = self.register_decoder(d) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Whether the type of `d` is registered under its name and every alias (so
    /// [`EventRegistry::register_decoders`] would change nothing).
    pub(crate) fn has_decoder(&self, d: &EventDecoder) -> bool {
        std::iter::once(&d.name).chain(d.aliases).all(|name| {
            self.by_name
                .get(*name)
                .is_some_and(|e| e.type_id == d.type_id)
        })
    }

    /// Whether events of the Rust type `type_id` may be appended under `name` as they
    /// are: it is that type's name or alias, or an upcaster's old name (the older shape,
    /// still written by a program that has it). `false` for a name another type reads as
    /// (its events would read back as that type) and for an unknown name.
    pub(crate) fn appends_as(&self, name: &str, type_id: TypeId) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|e| e.type_id == type_id || e.role == Role::UpcastSource)
    }

    /// Whether events stored under this name can be read (a type's name, an alias or an
    /// upcaster's old name).
    pub(crate) fn knows(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The Rust type events stored under `name` read as, and that type's current name.
    pub(crate) fn read_as(&self, name: &str) -> Option<(TypeId, &'static str)> {
        self.by_name.get(name).map(|e| (e.type_id, e.target))
    }

    /// Every stored name that reads as one of the types named `names` (their names,
    /// aliases and upcasters' old names): what a query limited to those types matches.
    pub(crate) fn stored_names_of(&self, names: &[&str]) -> Vec<String> {
        let types: Vec<TypeId> = names
            .iter()
            .filter_map(|n| self.by_name.get(*n).map(|e| e.type_id))
            .collect();
        let mut out: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        for (name, entry) in &self.by_name {
            if types.contains(&entry.type_id) && !out.contains(name) {
                out.push(name.clone());
            }
        }
        out
    }

    /// The events of an append to `stream` as a read of them will give them back: each
    /// of `events` appended under the stored name of `names` (with its encoded JSON in
    /// `json`), re-decoded from that JSON through the upcaster when the name is an
    /// upcaster's old name (the older shape, appended as it is: [`Self::appends_as`]),
    /// as it is otherwise. `None` when every event reads back as it is (the common case:
    /// nothing is copied). A failing upcaster is [`Error::Upcast`] naming the stream, at
    /// sequence 0 (the event is not stored yet).
    pub(crate) fn read_back(
        &self,
        stream: &marten_core::StreamId,
        names: &[&'static str],
        events: &[Arc<dyn AnyEvent>],
        json: &[crate::json::RawJson],
    ) -> Result<Option<Vec<Arc<dyn AnyEvent>>>> {
        let upcast = |name: &&str| {
            self.by_name
                .get(*name)
                .is_some_and(|e| matches!(e.decode, Decode::Upcast(_)))
        };
        if !names.iter().any(upcast) {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(events.len());
        for ((name, event), json) in names.iter().zip(events).zip(json) {
            if !upcast(name) {
                out.push(Arc::clone(event));
                continue;
            }
            match self.decode(name, 0, &json.0) {
                Ok(Some(decoded)) => out.push(decoded),
                // An upcaster's old name is always known: nothing is skipped.
                Ok(None) => out.push(Arc::clone(event)),
                Err(e) => return Err(in_stream(e, stream)),
            }
        }
        Ok(Some(out))
    }

    /// Deserializes a stored event (upcasting an older shape), or says why not.
    /// `Ok(None)` means skip it. `sequence` names the event in errors and logs
    /// ([`UNREAD_SEQUENCE`] from a read that did not read it: its caller names it).
    pub(crate) fn decode(
        &self,
        event_type: &str,
        sequence: i64,
        json: &[u8],
    ) -> Result<Option<Arc<dyn AnyEvent>>> {
        match self.by_name.get(event_type) {
            Some(Entry {
                decode: Decode::Plain(decode),
                ..
            }) => decode(json)
                .map(Some)
                .map_err(|source| Error::DeserializeEvent {
                    event_type: event_type.to_owned(),
                    sequence,
                    stream: None,
                    source,
                }),
            Some(Entry {
                decode: Decode::Upcast(upcast),
                target,
                ..
            }) => upcast(json).map(Some).map_err(|message| Error::Upcast {
                event_type: event_type.to_owned(),
                target,
                sequence,
                stream: None,
                message,
            }),
            None => match self.unknown {
                UnknownEvents::Skip => {
                    let sequence = (sequence != UNREAD_SEQUENCE).then_some(sequence);
                    tracing::warn!(
                        event_type,
                        sequence,
                        "skipping an event of an unregistered type"
                    );
                    Ok(None)
                }
                UnknownEvents::Error => Err(Error::UnknownEventType {
                    event_type: event_type.to_owned(),
                    sequence,
                }),
            },
        }
    }
}

/// `err`, an event that did not decode, naming the stream it belongs to (the registry
/// decodes the body alone).
pub(crate) fn in_stream(mut err: Error, of: &marten_core::StreamId) -> Error {
    if let Error::DeserializeEvent { stream, .. } | Error::Upcast { stream, .. } = &mut err {
        *stream = Some(of.clone());
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Renamed {
        n: i64,
    }
    impl Event for Renamed {
        const EVENT_TYPE: &'static str = "renamed";
        const ALIASES: &'static [&'static str] = &["old_a", "old_b"];
    }

    #[derive(Serialize, Deserialize)]
    struct Other {}
    impl Event for Other {
        const EVENT_TYPE: &'static str = "old_b";
    }

    #[derive(Serialize, Deserialize)]
    struct Third {}
    impl Event for Third {
        const EVENT_TYPE: &'static str = "third";
    }

    #[derive(Deserialize)]
    struct Before {
        count: i64,
    }

    fn decoded(r: &EventRegistry, name: &str, json: &str) -> Result<Arc<dyn AnyEvent>> {
        r.decode(name, 7, json.as_bytes())
            .and_then(|d| d.ok_or_else(|| Error::Configuration("skipped".into())))
    }

    #[test]
    fn aliases_and_upcasters_read_as_the_current_type() {
        let mut r = EventRegistry::default();
        assert!(r.register::<Renamed>().is_ok());
        assert!(r
            .upcast_typed::<Before, Renamed, _>("counted", |b| Renamed { n: b.count })
            .is_ok());
        for (name, json) in [
            ("renamed", r#"{"n": 1}"#),
            ("old_a", r#"{"n": 1}"#),
            ("counted", r#"{"count": 1}"#),
        ] {
            let e = decoded(&r, name, json).map_err(|e| e.to_string());
            let n = e.map(|e| e.as_any().downcast_ref::<Renamed>().map(|r| r.n));
            assert_eq!(n, Ok(Some(1)), "{name}");
        }
        let mut names = r.stored_names_of(&["renamed"]);
        names.sort();
        assert_eq!(names, ["counted", "old_a", "old_b", "renamed"]);
        // Registering again is harmless.
        assert!(r.register::<Renamed>().is_ok());
    }

    #[test]
    fn a_failing_upcaster_names_the_stored_type_and_sequence() {
        let mut r = EventRegistry::default();
        assert!(r
            .upcast_json::<Renamed, _>("v1", |_| Err("gone".to_owned()))
            .is_ok());
        match decoded(&r, "v1", "{}") {
            Err(Error::Upcast {
                event_type,
                target,
                sequence,
                message,
                ..
            }) => {
                assert_eq!(
                    (event_type.as_str(), target, sequence, message.as_str()),
                    ("v1", "renamed", 7, "gone")
                );
            }
            other => panic!("expected Upcast, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn colliding_names_are_configuration_errors() {
        let mut r = EventRegistry::default();
        assert!(r.register::<Other>().is_ok());
        assert!(matches!(
            r.register::<Renamed>(),
            Err(Error::Configuration(_))
        ));
        // Nothing of the refused type was registered.
        assert!(!r.knows("renamed") && !r.knows("old_a"));

        let mut r = EventRegistry::default();
        assert!(r.register::<Renamed>().is_ok());
        assert!(matches!(
            r.register::<Other>(),
            Err(Error::Configuration(_))
        ));
        let upcast = r.upcast_json::<Other, _>("old_a", Ok);
        assert!(matches!(upcast, Err(Error::Configuration(_))));
        assert!(r.upcast_json::<Renamed, _>("x", Ok).is_ok());
        assert!(matches!(
            r.upcast_json::<Renamed, _>("x", Ok),
            Err(Error::Configuration(_))
        ));
        assert!(matches!(
            r.upcast_json::<Renamed, _>(" ", Ok),
            Err(Error::Configuration(_))
        ));
    }

    #[test]
    fn projections_event_types_clash_as_registered_types_do() {
        let mut r = EventRegistry::default();
        // The same type again, however it comes: no change.
        let same = vec![EventDecoder::of::<Renamed>(), EventDecoder::of::<Renamed>()];
        assert!(r.register_decoders(same).is_ok());
        assert!(r.register::<Renamed>().is_ok());
        assert!(r.has_decoder(&EventDecoder::of::<Renamed>()));

        // `Other` is stored as "old_b", an alias of `Renamed`: refused, naming the
        // stored name and both Rust types; the other decoder is registered.
        let clash = vec![EventDecoder::of::<Other>(), EventDecoder::of::<Third>()];
        match r.register_decoders(clash) {
            Err(Error::Configuration(message)) => {
                for part in [
                    "\"old_b\"",
                    std::any::type_name::<Renamed>(),
                    std::any::type_name::<Other>(),
                ] {
                    assert!(message.contains(part), "{part} in {message}");
                }
            }
            other => panic!("expected Configuration, got {:?}", other.err()),
        }
        assert_eq!(
            r.read_as("old_b"),
            Some((TypeId::of::<Renamed>(), "renamed"))
        );
        assert!(!r.has_decoder(&EventDecoder::of::<Other>()));
        assert!(r.has_decoder(&EventDecoder::of::<Third>()));

        // An upcaster's old name is no projection's event type name, either way round.
        let mut r = EventRegistry::default();
        assert!(r.upcast_json::<Renamed, _>("third", Ok).is_ok());
        let third = r.register_decoders(vec![EventDecoder::of::<Third>()]);
        assert!(matches!(third, Err(Error::Configuration(_))));
        let mut r = EventRegistry::default();
        assert!(r
            .register_decoders(vec![EventDecoder::of::<Third>()])
            .is_ok());
        let upcast = r.upcast_json::<Renamed, _>("third", Ok);
        assert!(matches!(upcast, Err(Error::Configuration(_))));
    }
}
