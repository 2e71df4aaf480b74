//! The event types a store knows: type name -> how to deserialize it.

use std::collections::HashMap;
use std::sync::Arc;

use marten_core::{AnyEvent, Error, Event, Result};

use marten_core::{DecodeFn, EventDecoder};

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

/// Registered event types.
#[derive(Default, Clone)]
pub(crate) struct EventRegistry {
    by_name: HashMap<&'static str, (std::any::TypeId, DecodeFn)>,
    pub(crate) unknown: UnknownEvents,
}

impl EventRegistry {
    /// Registers `E`; two different types with one name are a configuration error.
    pub(crate) fn register<E: Event>(&mut self) -> Result<()> {
        let d = EventDecoder::of::<E>();
        let entry = (d.type_id, d.decode);
        match self.by_name.get(E::EVENT_TYPE) {
            Some((existing, _)) if *existing != entry.0 => Err(Error::Configuration(format!(
                "two event types are named {:?}: give one #[event(name = \"...\")]",
                E::EVENT_TYPE
            ))),
            _ => {
                self.by_name.insert(E::EVENT_TYPE, entry);
                Ok(())
            }
        }
    }

    /// Registers the event types an apply-dispatch type handles (by name; a name already
    /// registered is left as it is).
    pub(crate) fn register_decoders(&mut self, decoders: Vec<EventDecoder>) {
        for d in decoders {
            self.by_name.entry(d.name).or_insert((d.type_id, d.decode));
        }
    }

    /// Whether a type of this name is registered.
    pub(crate) fn knows(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Deserializes a stored event, or says why not. `Ok(None)` means skip it.
    pub(crate) fn decode(
        &self,
        event_type: &str,
        sequence: i64,
        json: &[u8],
    ) -> Result<Option<Arc<dyn AnyEvent>>> {
        match self.by_name.get(event_type) {
            Some((_, decode)) => decode(json)
                .map(Some)
                .map_err(|source| Error::DeserializeEvent {
                    event_type: event_type.to_owned(),
                    sequence,
                    source,
                }),
            None => match self.unknown {
                UnknownEvents::Skip => {
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
