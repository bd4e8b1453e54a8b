-- Lineage: raw OpenLineage events (append-only, the source of truth) and the graph derived from
-- them (jobs, datasets, runs, current job inputs/outputs, Airflow task dependencies, facets).
-- Jobs and datasets take their ids from one sequence, so a graph node is a single bigint and the
-- recursive queries walk one edge relation (ol_edges) over integer keys.

CREATE SEQUENCE ol_node_id_seq;

CREATE TABLE lineage_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_hash     text NOT NULL UNIQUE,          -- sha256 of the canonical (redacted) event
    event_kind     text NOT NULL CHECK (event_kind IN ('run', 'job', 'dataset')),
    event_type     text CHECK (event_type IN ('START', 'RUNNING', 'COMPLETE', 'ABORT', 'FAIL', 'OTHER')),
    event_time     timestamptz NOT NULL,
    run_id         uuid,
    job_namespace  text,
    job_name       text,
    producer       text NOT NULL,
    has_io         boolean NOT NULL DEFAULT false,
    source         text NOT NULL DEFAULT 'api',   -- api | file | ...
    event          jsonb NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lineage_events_time_idx ON lineage_events (event_time, id);
CREATE INDEX lineage_events_run_idx ON lineage_events (run_id);
CREATE INDEX lineage_events_job_io_idx ON lineage_events (job_namespace, job_name, event_time DESC)
    WHERE has_io;

CREATE FUNCTION lineage_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'lineage_events is append-only (% refused)', TG_OP;
END
$$;
CREATE TRIGGER lineage_events_append_only BEFORE UPDATE OR DELETE ON lineage_events
    FOR EACH ROW EXECUTE FUNCTION lineage_events_append_only();

CREATE TABLE ol_jobs (
    id               bigint PRIMARY KEY DEFAULT nextval('ol_node_id_seq'),
    namespace        text NOT NULL,
    name             text NOT NULL,
    job_type         text,          -- jobType facet: TASK, DAG, QUERY, ...
    integration      text,          -- jobType facet: AIRFLOW, SPARK, ...
    dag_id           text,
    task_id          text,
    parent_job_id    bigint REFERENCES ol_jobs (id),
    deps_event_time  timestamptz,   -- the event whose airflow facet gave the current task deps
    deps_event_hash  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace, name)
);
CREATE INDEX ol_jobs_dag_idx ON ol_jobs (dag_id, task_id);
CREATE INDEX ol_jobs_name_idx ON ol_jobs (name);

-- Current job facets: per facet name, the one from the latest event (time, then hash).
CREATE TABLE ol_job_facets (
    job_id      bigint NOT NULL REFERENCES ol_jobs (id) ON DELETE CASCADE,
    name        text NOT NULL,
    facet       jsonb NOT NULL,
    event_time  timestamptz NOT NULL,
    event_hash  text NOT NULL,
    PRIMARY KEY (job_id, name)
);

CREATE TABLE ol_datasets (
    id          bigint PRIMARY KEY DEFAULT nextval('ol_node_id_seq'),
    namespace   text NOT NULL,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace, name)
);
CREATE INDEX ol_datasets_name_idx ON ol_datasets (name);

CREATE TABLE ol_dataset_facets (
    dataset_id  bigint NOT NULL REFERENCES ol_datasets (id) ON DELETE CASCADE,
    name        text NOT NULL,
    facet       jsonb NOT NULL,
    event_time  timestamptz NOT NULL,
    event_hash  text NOT NULL,
    PRIMARY KEY (dataset_id, name)
);

-- Runs: state is decided by a terminal event over any other, then by the later event, so any
-- delivery order ends in the same row.
CREATE TABLE ol_runs (
    run_id            uuid PRIMARY KEY,
    job_id            bigint NOT NULL REFERENCES ol_jobs (id) ON DELETE CASCADE,
    parent_run_id     uuid,
    state             text NOT NULL
                          CHECK (state IN ('START', 'RUNNING', 'COMPLETE', 'ABORT', 'FAIL', 'OTHER')),
    state_rank        smallint NOT NULL,
    state_event_time  timestamptz NOT NULL,
    state_event_hash  text NOT NULL,
    started_at        timestamptz,
    ended_at          timestamptz,
    first_event_time  timestamptz NOT NULL,
    last_event_time   timestamptz NOT NULL,
    nominal_start_time timestamptz,
    nominal_end_time  timestamptz,
    error_message     text,
    stack_trace       text,
    error_event_time  timestamptz,
    error_event_hash  text,
    facets            jsonb NOT NULL DEFAULT '{}'::jsonb,
    facet_versions    jsonb NOT NULL DEFAULT '{}'::jsonb,   -- facet name -> "time|hash" that set it
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ol_runs_job_idx ON ol_runs (job_id, first_event_time DESC, run_id DESC);
CREATE INDEX ol_runs_failed_idx ON ol_runs (ended_at DESC) WHERE state = 'FAIL';
CREATE INDEX ol_runs_parent_idx ON ol_runs (parent_run_id);

-- Current inputs/outputs of each job: those of the job's latest run that reported any.
CREATE TABLE ol_job_io (
    job_id      bigint NOT NULL REFERENCES ol_jobs (id) ON DELETE CASCADE,
    io_type     text NOT NULL CHECK (io_type IN ('input', 'output')),
    dataset_id  bigint NOT NULL REFERENCES ol_datasets (id) ON DELETE CASCADE,
    run_id      uuid,
    PRIMARY KEY (job_id, io_type, dataset_id)
);
CREATE INDEX ol_job_io_dataset_idx ON ol_job_io (dataset_id, io_type, job_id);

-- Airflow task dependencies (upstream_task_ids / downstream_task_ids of the airflow run facet).
-- declared_by: the job whose latest event declared the edge; its next event replaces its set.
CREATE TABLE ol_job_deps (
    upstream_job_id    bigint NOT NULL REFERENCES ol_jobs (id) ON DELETE CASCADE,
    downstream_job_id  bigint NOT NULL REFERENCES ol_jobs (id) ON DELETE CASCADE,
    declared_by        bigint NOT NULL REFERENCES ol_jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (upstream_job_id, downstream_job_id, declared_by),
    CHECK (upstream_job_id <> downstream_job_id)
);
CREATE INDEX ol_job_deps_down_idx ON ol_job_deps (downstream_job_id, upstream_job_id);
CREATE INDEX ol_job_deps_declared_idx ON ol_job_deps (declared_by);

-- The directed graph, materialised: job -> dataset (produces), dataset -> job (consumed_by),
-- job -> job (task_dep). Each row is owned by the job whose events maintain it (its IO, or the task
-- dependencies it declared), so an event only ever rewrites rows of the job it has locked. A task
-- dependency declared by both of its ends appears twice; the walks deduplicate. Recursing over a
-- real table with (src) and (dst) indexes keeps each step an index lookup; a UNION ALL view here
-- made the planner hash the whole edge set on every step.
CREATE TABLE ol_edges (
    src           bigint NOT NULL,
    dst           bigint NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('produces', 'consumed_by', 'task_dep')),
    owner_job_id  bigint NOT NULL REFERENCES ol_jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (src, dst, kind, owner_job_id)
);
CREATE INDEX ol_edges_dst_idx ON ol_edges (dst, src, kind);
CREATE INDEX ol_edges_owner_idx ON ol_edges (owner_job_id, kind);

CREATE VIEW ol_nodes AS
    SELECT id, 'job'::text AS type, namespace, name, 'job:' || namespace || ':' || name AS node_id,
           dag_id, task_id, job_type
      FROM ol_jobs
    UNION ALL
    SELECT id, 'dataset'::text, namespace, name, 'dataset:' || namespace || ':' || name,
           NULL, NULL, NULL
      FROM ol_datasets;

-- The latest run of every job (by first event time; ties by run id, never arrival order).
CREATE VIEW ol_latest_runs AS
    SELECT DISTINCT ON (job_id) *
      FROM ol_runs
     ORDER BY job_id, first_event_time DESC, run_id DESC;
