//! The loops beside the API that move the engine: the worker decides (inbox → machine →
//! snapshot and outbox), the executor performs (outbox → services and base), the
//! reconciler asks the services about jobs past their deadline, the pruner applies
//! retention. Each runs on every replica, works only from the store and its leases, and
//! stops at shutdown after a bounded drain (`engine::drain`).

pub mod executor;
pub mod pruner;
pub mod reconciler;
pub mod worker;
