//! The project-management domain of the event tests.
#![allow(dead_code)]

use marten::prelude::*;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProjectStarted {
    pub name: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TaskRecorded {
    pub title: String,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TaskStarted {
    pub title: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TaskFinished {
    pub title: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[event(name = "project_done")]
pub struct ProjectCompleted {}

pub fn started(name: &str) -> ProjectStarted {
    ProjectStarted { name: name.into() }
}

pub fn task(title: &str) -> TaskRecorded {
    TaskRecorded {
        title: title.into(),
        timestamp: OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    }
}

pub fn finished(title: &str) -> TaskFinished {
    TaskFinished {
        title: title.into(),
    }
}
