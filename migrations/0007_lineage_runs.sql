-- Lineage that tells the truth about real Airflow runs.
-- ol_runs.job_facets: the git job facets (sourceCodeLocation, tags) carried by the run's own
--   events, per facet the latest (job_facet_versions holds "time|hash" like facet_versions), so
--   a run's git SHA is its own and never an older run's.
-- ol_runs.impact: what a failed run blocked and left stale, recorded when the failure (and the
--   end of its DAG run) arrived: `qwb lineage failures` answers as of the failing run.
ALTER TABLE ol_runs ADD COLUMN job_facets jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE ol_runs ADD COLUMN job_facet_versions jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE ol_runs ADD COLUMN impact jsonb;
CREATE INDEX ol_jobs_parent_idx ON ol_jobs (parent_job_id);
-- "the first completed run of this job after that failure"
CREATE INDEX ol_runs_job_state_idx ON ol_runs (job_id, state, first_event_time);

-- Existing runs: the git job facets of each run's latest event that carried any.
UPDATE ol_runs r
   SET job_facets = x.facets
  FROM (SELECT DISTINCT ON (run_id) run_id,
               jsonb_strip_nulls(jsonb_build_object(
                   'sourceCodeLocation', event->'job'->'facets'->'sourceCodeLocation',
                   'tags', event->'job'->'facets'->'tags')) AS facets
          FROM lineage_events
         WHERE run_id IS NOT NULL
           AND event->'job'->'facets' ?| ARRAY['sourceCodeLocation', 'tags']
         ORDER BY run_id, event_time DESC, event_hash DESC) x
 WHERE x.run_id = r.run_id;
