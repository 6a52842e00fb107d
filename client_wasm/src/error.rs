//! One error type for the trainer; it reaches JavaScript as an `Error` with this message.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum TrainerError {
    Spec(String),
    Weights(String),
    Data(String),
    Config(String),
    NonFinite(String),
    Backend(String),
    Memory(String),
    Checkpoint(String),
}

impl fmt::Display for TrainerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spec(m) => write!(f, "bad model spec: {m}"),
            Self::Weights(m) => write!(f, "bad weights: {m}"),
            Self::Data(m) => write!(f, "bad data: {m}"),
            Self::Config(m) => write!(f, "bad training config: {m}"),
            Self::NonFinite(m) => write!(f, "training diverged: {m}"),
            Self::Backend(m) => write!(f, "backend failure: {m}"),
            Self::Memory(m) => write!(f, "out of memory: {m}"),
            Self::Checkpoint(m) => write!(f, "bad checkpoint: {m}"),
        }
    }
}

impl std::error::Error for TrainerError {}

pub type Result<T> = std::result::Result<T, TrainerError>;
