//! What an effect's attempt can end in, by what the executor does next; each client's
//! error classified into it once, here.

use crate::clients::ClientError;
use crate::records::RecordsError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum EffectError {
    #[error("{0}")]
    Transient(String),
    /// An external call that may have been received: retried only after the grace period
    /// (its `started_at` is kept), so that its callback can arrive first.
    #[error("{0}")]
    Ambiguous(String),
    #[error("{0}")]
    Permanent(String),
    /// This executor lost the video's lease before its write went out: nothing was
    /// written, nothing is recorded; the new holder runs the effect.
    #[error("the video's lease was lost; nothing was written")]
    LeaseLost,
}

impl From<RecordsError> for EffectError {
    fn from(e: RecordsError) -> Self {
        if e == RecordsError::Fenced {
            EffectError::LeaseLost
        } else if e.is_transient() {
            EffectError::Transient(e.to_string())
        } else {
            EffectError::Permanent(e.to_string())
        }
    }
}

impl From<ClientError> for EffectError {
    fn from(e: ClientError) -> Self {
        if e.is_ambiguous() {
            EffectError::Ambiguous(e.to_string())
        } else if e.is_transient() {
            EffectError::Transient(e.to_string())
        } else {
            EffectError::Permanent(e.to_string())
        }
    }
}

impl From<crate::store::StoreError> for EffectError {
    fn from(e: crate::store::StoreError) -> Self {
        EffectError::Transient(e.to_string())
    }
}
