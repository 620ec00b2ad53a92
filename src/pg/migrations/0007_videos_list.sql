-- The videos list (GET /videos, /ui/videos) pages by last change, and its search finds a
-- video from a job's external id (GoAPI task id, NCA job id) in the job index instead of
-- reading every snapshot. Jobs committed before this take their external id from their
-- snapshot here.
ALTER TABLE job_index ADD COLUMN external_id TEXT;
UPDATE job_index SET external_id = j ->> 'external_id'
FROM video_state v, jsonb_array_elements(v.snapshot::jsonb -> 'jobs') AS j
WHERE v.video_id = job_index.video_id AND j ->> 'id' = job_index.job_id
  AND j ->> 'external_id' IS NOT NULL;
CREATE INDEX job_index_external ON job_index (external_id) WHERE external_id IS NOT NULL;
CREATE INDEX video_state_updated ON video_state (updated_at, video_id);
