//! Writes: one queue per table, drained by a background task that puts whatever is queued
//! when the next slot is granted into one request (up to 10 records, one write per record;
//! updates ride in upsert requests), and answers each caller.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::AirtableBackend;
use super::budget::{Priority, Slot};
use super::read::parse_records;
use super::request::{Repeat, Shared, bump, unexpected};
use crate::records::fence::{self, Fence};
use crate::records::{Fields, Record, RecordsError, Write};

/// Airtable accepts at most this many records per create/update request.
pub(crate) const MAX_RECORDS_PER_WRITE: usize = 10;

/// One pending write and the caller waiting for its outcome.
pub(super) struct WriteOp {
    kind: Write,
    fields: Fields,
    reply: oneshot::Sender<Result<Record, RecordsError>>,
    /// The writer's right to write, asked just before the request is sent.
    fence: Option<Fence>,
}

/// Writes that can share one request: the same HTTP shape.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BatchKind {
    Create,
    Update,
    Upsert(String),
}

impl WriteOp {
    fn batch_kind(&self) -> BatchKind {
        match &self.kind {
            Write::Create => BatchKind::Create,
            Write::Update(_) => BatchKind::Update,
            Write::Upsert(m) => BatchKind::Upsert(m.clone()),
        }
    }

    /// Two writes with the same key must not share a request: their order would be lost
    /// (and Airtable may reject duplicate ids in one request).
    fn conflict_key(&self) -> Option<String> {
        match &self.kind {
            Write::Create => None,
            Write::Update(id) => Some(format!("id:{}", id.as_str())),
            Write::Upsert(m) => self.fields.get(m).map(|v| format!("key:{v}")),
        }
    }
}

impl BatchKind {
    /// The kind of a request holding writes of `self`'s kind and `op`, if one can. An
    /// update by record id rides in an upsert request: Airtable updates a record that
    /// carries an `id` as a plain update there, ignoring `fieldsToMergeOn` (docs/airtable.md).
    fn with(&self, op: &WriteOp) -> Option<BatchKind> {
        match (self, op.batch_kind()) {
            (a, b) if *a == b => Some(b),
            (BatchKind::Update, up @ BatchKind::Upsert(_)) => Some(up),
            (up @ BatchKind::Upsert(_), BatchKind::Update) => Some(up.clone()),
            _ => None,
        }
    }
}

/// The kind of request that sends `ops` (as `take_batch` put them together).
fn kind_of(ops: &[&WriteOp]) -> Option<BatchKind> {
    let first = ops.first()?.batch_kind();
    ops.iter().try_fold(first, |k, op| k.with(op))
}

/// Takes the next request's worth of writes from the queue: those that can share the
/// first write's request (its kind; updates and upserts together), in queue order, up to
/// 10, leaving a write whose record is already in the batch (and everything of another
/// kind) for a later request, in order.
fn take_batch(pending: &mut VecDeque<WriteOp>) -> Vec<WriteOp> {
    let Some(mut kind) = pending.front().map(WriteOp::batch_kind) else {
        return Vec::new();
    };
    let mut batch = Vec::new();
    let mut keys = HashSet::new();
    let mut rest = VecDeque::new();
    while let Some(op) = pending.pop_front() {
        let joined = kind
            .with(&op)
            .filter(|_| batch.len() < MAX_RECORDS_PER_WRITE);
        match joined {
            Some(k) if op.conflict_key().is_none_or(|key| keys.insert(key)) => {
                kind = k;
                batch.push(op);
            }
            _ => rest.push_back(op),
        }
    }
    *pending = rest;
    batch
}

impl AirtableBackend {
    pub(super) async fn enqueue(
        &self,
        table: &str,
        kind: Write,
        fields: Fields,
    ) -> Result<Record, RecordsError> {
        let (reply, answer) = oneshot::channel();
        let mut op = WriteOp {
            kind,
            fields,
            reply,
            fence: fence::current(),
        };
        {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            // A queue whose task ended (it only does if it panicked) is replaced once.
            for _ in 0..2 {
                let sender = queues.entry(table.to_owned()).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(drain(self.shared.clone(), table.to_owned(), rx));
                    tx
                });
                match sender.send(op) {
                    Ok(()) => break,
                    Err(mpsc::error::SendError(back)) => {
                        op = back;
                        queues.remove(table);
                    }
                }
            }
        }
        answer
            .await
            .map_err(|_| RecordsError::Transient(format!("the write queue of {table} stopped")))?
    }
}

/// How long a write waits for others to share its request.
const GATHER: Duration = Duration::from_millis(10);

/// The background task of one table's write queue.
async fn drain(shared: Arc<Shared>, table: String, mut rx: mpsc::UnboundedReceiver<WriteOp>) {
    let mut pending: VecDeque<WriteOp> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(op) => pending.push_back(op),
                None => return,
            }
        }
        let slot = shared.budget.acquire_for(Priority::Write).await;
        // Writes started together with this one get to join its request: a few
        // milliseconds are nothing next to Airtable's round trip, and a request saved is
        // a fifth of a second of the base's budget.
        tokio::time::sleep(GATHER).await;
        while let Ok(op) = rx.try_recv() {
            pending.push_back(op);
        }
        let batch = take_batch(&mut pending);
        shared.write_batch(&table, batch, slot).await;
    }
}

impl Shared {
    /// One write request for `ops` (all of one kind); the records come back in order.
    async fn request_writes(
        &self,
        table: &str,
        kind: &BatchKind,
        ops: &[&WriteOp],
        slot: Option<Slot>,
    ) -> Result<Vec<Record>, RecordsError> {
        let url = self.url(&["v0", &self.cfg.base_id, table])?;
        let records: Vec<Value> = ops
            .iter()
            .map(|op| match &op.kind {
                Write::Update(id) => json!({ "id": id.as_str(), "fields": op.fields }),
                Write::Create | Write::Upsert(_) => json!({ "fields": op.fields }),
            })
            .collect();
        let (method, body) = match kind {
            BatchKind::Create => (Method::POST, json!({ "records": records })),
            BatchKind::Update => (Method::PATCH, json!({ "records": records })),
            BatchKind::Upsert(merge_on) => (
                Method::PATCH,
                json!({
                    "performUpsert": { "fieldsToMergeOn": [merge_on] },
                    "records": records,
                }),
            ),
        };
        let repeat = match kind {
            BatchKind::Create => Repeat::Unsafe,
            BatchKind::Update | BatchKind::Upsert(_) => Repeat::Safe,
        };
        let fences: Vec<Fence> = ops.iter().filter_map(|op| op.fence.clone()).collect();
        let response = self
            .send_fenced(method, url, Some(&body), slot, repeat, &fences)
            .await?;
        let written = parse_records(&response)?;
        if written.len() != ops.len() {
            return Err(unexpected(
                200,
                format!("{} records written, {} returned", ops.len(), written.len()),
            ));
        }
        bump(&self.counters.records_written, written.len() as u64);
        Ok(written)
    }

    /// Sends one batch and answers each caller. A batch refused because of one of its
    /// records (422, or 404 for an update of a missing record) is resent record by record,
    /// so that only the bad record's caller gets the error.
    async fn write_batch(&self, table: &str, batch: Vec<WriteOp>, slot: Slot) {
        // The slot is granted: this is the moment the request goes out. A write whose
        // writer lost the video since it was queued is answered, not sent.
        let mut allowed = Vec::with_capacity(batch.len());
        for op in batch {
            match &op.fence {
                Some(f) if !fence::all_allow(std::slice::from_ref(f)).await => {
                    let _ = op.reply.send(Err(RecordsError::Fenced));
                }
                _ => allowed.push(op),
            }
        }
        let batch = allowed;
        let refs: Vec<&WriteOp> = batch.iter().collect();
        let Some(kind) = kind_of(&refs) else {
            return;
        };
        match self.request_writes(table, &kind, &refs, Some(slot)).await {
            Ok(records) => {
                for (op, record) in batch.into_iter().zip(records) {
                    // The caller may have gone away; its write is applied all the same.
                    let _ = op.reply.send(Ok(record));
                }
            }
            Err(RecordsError::Permanent { status, .. })
                if batch.len() > 1 && matches!(status, 404 | 422) =>
            {
                for op in batch {
                    let result = self
                        .request_writes(table, &op.batch_kind(), &[&op], None)
                        .await
                        .and_then(|r| {
                            r.into_iter()
                                .next()
                                .ok_or_else(|| unexpected(200, "no record returned"))
                        });
                    let result = result.map_err(|e| not_found(e, &op.kind, table));
                    let _ = op.reply.send(result);
                }
            }
            Err(e) => {
                for op in batch {
                    let err = not_found(e.clone(), &op.kind, table);
                    let _ = op.reply.send(Err(err));
                }
            }
        }
    }
}

/// An update of a record that does not exist is `NotFound`, not an Airtable error.
fn not_found(e: RecordsError, kind: &Write, table: &str) -> RecordsError {
    match (&e, kind) {
        (RecordsError::Permanent { status: 404, .. }, Write::Update(id)) => {
            RecordsError::NotFound(id.to_string(), table.to_owned())
        }
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RecordId;

    fn rid(s: &str) -> RecordId {
        RecordId::parse(s).unwrap()
    }

    fn op(kind: Write, fields: Value) -> WriteOp {
        let (reply, _) = oneshot::channel();
        let Value::Object(fields) = fields else {
            panic!("fields must be an object")
        };
        WriteOp {
            kind,
            fields,
            reply,
            fence: None,
        }
    }

    #[test]
    fn batches_keep_one_write_per_record_and_one_kind() {
        let a = rid("recAAAAAAAAAAAAAA");
        let b = rid("recBBBBBBBBBBBBBB");
        let mut q: VecDeque<WriteOp> = VecDeque::from(vec![
            op(Write::Update(a.clone()), json!({"n": 1})),
            op(Write::Create, json!({})),
            op(Write::Update(b.clone()), json!({"n": 2})),
            op(Write::Update(a.clone()), json!({"n": 3})),
            op(Write::Upsert("K".into()), json!({"K": "x"})),
            op(Write::Upsert("K".into()), json!({"K": "x"})),
        ]);
        let first = take_batch(&mut q);
        assert_eq!(
            first.iter().map(|o| o.kind.clone()).collect::<Vec<_>>(),
            vec![
                Write::Update(a.clone()),
                Write::Update(b),
                Write::Upsert("K".into())
            ]
        );
        // The second write of `a` (and of key x) waits for the next request, ahead of
        // other kinds' order.
        assert_eq!(q.len(), 3);
        assert_eq!(take_batch(&mut q).len(), 1); // the create
        let again = take_batch(&mut q);
        assert_eq!(again[0].fields["n"], json!(3));
        assert_eq!(again.len(), 2, "with the other upsert of key x");
        assert!(q.is_empty());
    }

    /// Updates by id share a request with upserts (one upsert request: Airtable updates
    /// the records that carry an id), never with creates or another merge field's upserts.
    #[test]
    fn updates_ride_in_upsert_requests() {
        let a = rid("recAAAAAAAAAAAAAA");
        let b = rid("recBBBBBBBBBBBBBB");
        let mut q: VecDeque<WriteOp> = VecDeque::from(vec![
            op(Write::Update(a.clone()), json!({"n": 1})),
            op(Write::Create, json!({})),
            op(Write::Upsert("K".into()), json!({"K": "x"})),
            op(Write::Upsert("L".into()), json!({"L": "y"})),
            op(Write::Update(b.clone()), json!({"n": 2})),
        ]);
        let first = take_batch(&mut q);
        assert_eq!(
            first.iter().map(|o| o.kind.clone()).collect::<Vec<_>>(),
            vec![
                Write::Update(a),
                Write::Upsert("K".into()),
                Write::Update(b)
            ]
        );
        let refs: Vec<&WriteOp> = first.iter().collect();
        assert_eq!(kind_of(&refs), Some(BatchKind::Upsert("K".into())));
        assert_eq!(take_batch(&mut q)[0].kind, Write::Create);
        assert_eq!(take_batch(&mut q)[0].kind, Write::Upsert("L".into()));
        assert!(q.is_empty());
    }

    #[test]
    fn batches_hold_at_most_ten() {
        let mut q: VecDeque<WriteOp> = (0..25).map(|_| op(Write::Create, json!({}))).collect();
        assert_eq!(take_batch(&mut q).len(), 10);
        assert_eq!(take_batch(&mut q).len(), 10);
        assert_eq!(take_batch(&mut q).len(), 5);
    }
}
