//! Folding a record's later pending writes into its first: the newest value of each field
//! wins, so the record never shows an older state than one already written.

use crate::machine::{Effect, JobPatch};
use crate::store::OutboxEntry;

/// `patch` with `later`'s fields written over it.
fn fold_job_patch(patch: &mut JobPatch, later: &JobPatch) {
    if later.status.is_some() {
        patch.status = later.status;
    }
    if later.external_id.is_some() {
        patch.external_id.clone_from(&later.external_id);
    }
    if later.error.is_some() {
        patch.error.clone_from(&later.error);
    }
}

/// The write of `head` with the later writes of its record folded in.
pub(super) fn folded_effect(head: &Effect, folded: &[OutboxEntry]) -> (Effect, JobPatch) {
    let mut effect = head.clone();
    let mut create_extra = JobPatch::default();
    for later in folded {
        match (&mut effect, &later.effect) {
            (Effect::UpdateVideo(p), Effect::UpdateVideo(l)) => {
                if l.status.is_some() {
                    p.status.clone_from(&l.status);
                }
                if l.music.is_some() {
                    p.music.clone_from(&l.music);
                }
                if l.final_video.is_some() {
                    p.final_video.clone_from(&l.final_video);
                }
                if l.error_details.is_some() {
                    p.error_details.clone_from(&l.error_details);
                }
            }
            (Effect::UpdateJob { patch, .. }, Effect::UpdateJob { patch: l, .. }) => {
                fold_job_patch(patch, l)
            }
            (Effect::CreateJob { .. }, Effect::UpdateJob { patch: l, .. }) => {
                fold_job_patch(&mut create_extra, l)
            }
            _ => {}
        }
    }
    (effect, create_extra)
}
