//! Domain types that parse, never merely validate: once a value of one of these types
//! exists, it is well-formed, so nothing downstream re-checks it.

mod media_url;
mod record_id;
mod spelling;
mod status;

pub use media_url::{MediaUrl, MediaUrlError};
pub use record_id::{RecordId, RecordIdError};
pub(crate) use spelling::snake_case_enum;
pub use status::{JobStatus, JobType, VideoStatus};
