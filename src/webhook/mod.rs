//! Webhook payload parsing and authentication (filled in by the webhook work).
