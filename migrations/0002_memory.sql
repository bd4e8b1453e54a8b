-- Troubleshooting memory, decision log and the Provider-First registry (the seed's tables, made sound).

CREATE TABLE troubleshooting_attempts (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id         text NOT NULL,
    sequence_num       integer NOT NULL,
    task_description   text NOT NULL,
    error_message      text,
    error_category     text,
    error_signature    text,
    attempted_solution text NOT NULL,
    solution_type      text,
    result             text NOT NULL CHECK (result IN ('success', 'failed', 'partial')),
    result_details     text,
    confidence_score   double precision CHECK (confidence_score IS NULL OR confidence_score BETWEEN 0 AND 1),
    agent              text NOT NULL DEFAULT 'developer'
                           CHECK (agent IN ('developer', 'manager', 'calling_llm', 'user')),
    override_by        text,
    override_reason    text,
    dag_id             text,
    task_id            text,
    component          text,
    embedding          vector(384),
    embedding_model    text,
    tsv                tsvector GENERATED ALWAYS AS
                           (to_tsvector('english', coalesce(error_message, '') || ' ' || task_description)) STORED,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (session_id, sequence_num)
);
CREATE INDEX troubleshooting_embedding_idx ON troubleshooting_attempts
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX troubleshooting_tsv_idx ON troubleshooting_attempts USING gin (tsv);
CREATE INDEX troubleshooting_signature_idx ON troubleshooting_attempts (error_signature);
CREATE INDEX troubleshooting_component_idx ON troubleshooting_attempts (component, created_at);
CREATE INDEX troubleshooting_dag_idx ON troubleshooting_attempts (dag_id, task_id);
CREATE INDEX troubleshooting_created_idx ON troubleshooting_attempts (created_at);

-- Per-session counter: sequence numbers are taken with one atomic upsert, race-free.
CREATE TABLE troubleshooting_sessions (
    session_id    text PRIMARY KEY,
    last_sequence integer NOT NULL DEFAULT 0
);

-- Outcome changes are new facts: who changed what, when. The attempt row keeps the current result.
CREATE TABLE troubleshooting_outcome_updates (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    attempt_id    uuid NOT NULL REFERENCES troubleshooting_attempts (id) ON DELETE CASCADE,
    old_result    text NOT NULL,
    new_result    text NOT NULL CHECK (new_result IN ('success', 'failed', 'partial')),
    details       text,
    changed_by    text NOT NULL,
    changed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX troubleshooting_outcome_attempt_idx ON troubleshooting_outcome_updates (attempt_id);

CREATE TABLE agent_decisions (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id          text,
    agent               text NOT NULL CHECK (agent IN ('developer', 'manager', 'calling_llm', 'user')),
    decision_type       text NOT NULL CHECK (decision_type IN ('task_execution', 'escalation', 'override',
                            'provider_check', 'rag_query', 'confidence_check', 'delegation',
                            'plan_creation', 'approval')),
    context             jsonb NOT NULL DEFAULT '{}'::jsonb,
    decision            text NOT NULL,
    reasoning           text,
    confidence          double precision,
    rag_hits            integer,
    rag_max_similarity  double precision,
    outcome             text NOT NULL DEFAULT 'pending'
                            CHECK (outcome IN ('pending', 'success', 'failed', 'partial', 'cancelled')),
    outcome_details     text,
    parent_decision_id  uuid REFERENCES agent_decisions (id) ON DELETE SET NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz
);
CREATE INDEX agent_decisions_session_idx ON agent_decisions (session_id, created_at);
CREATE INDEX agent_decisions_type_idx ON agent_decisions (agent, decision_type);
CREATE INDEX agent_decisions_low_conf_idx ON agent_decisions (confidence) WHERE confidence < 0.6;

CREATE TABLE airflow_providers (
    provider_name      text PRIMARY KEY,
    package_name       text NOT NULL UNIQUE,
    aliases            jsonb NOT NULL DEFAULT '[]'::jsonb,
    operators          jsonb NOT NULL DEFAULT '[]'::jsonb,
    hooks              jsonb NOT NULL DEFAULT '[]'::jsonb,
    sensors            jsonb NOT NULL DEFAULT '[]'::jsonb,
    description        text,
    documentation_url  text,
    is_installed       boolean NOT NULL DEFAULT false,
    version            text,
    catalog_version    text,
    last_checked       timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX airflow_providers_aliases_idx ON airflow_providers USING gin (aliases);
