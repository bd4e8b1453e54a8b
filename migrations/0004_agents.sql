-- Agents: persistent conversations (sessions, messages) and the Developer's proposals.

CREATE TABLE agent_sessions (
    id              text PRIMARY KEY,
    title           text NOT NULL,
    status          text NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'waiting_approval', 'escalated', 'completed',
                                          'failed', 'rejected')),
    created_by      text NOT NULL CHECK (created_by IN ('operator', 'calling_llm')),
    -- What the Manager waits for before it goes on (an approval to delegate, a plan to approve).
    pending         jsonb,
    last_confidence double precision,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_sequence   integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_sessions_updated_idx ON agent_sessions (updated_at DESC);
CREATE INDEX agent_sessions_status_idx ON agent_sessions (status);

CREATE TABLE agent_messages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id  text NOT NULL REFERENCES agent_sessions (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    speaker     text NOT NULL
                    CHECK (speaker IN ('calling_llm', 'operator', 'manager', 'developer', 'system')),
    kind        text NOT NULL,
    content     text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (session_id, seq)
);

CREATE TABLE agent_proposals (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id        text NOT NULL REFERENCES agent_sessions (id) ON DELETE CASCADE,
    decision_id       uuid REFERENCES agent_decisions (id) ON DELETE SET NULL,
    task              text NOT NULL,
    repo              text NOT NULL,
    base_commit       text,
    method            text NOT NULL CHECK (method IN ('aider', 'llm')),
    diff              text NOT NULL,
    files             jsonb NOT NULL DEFAULT '[]'::jsonb,
    status            text NOT NULL DEFAULT 'proposed'
                          CHECK (status IN ('proposed', 'approved', 'applied', 'rejected', 'failed')),
    validation_ok     boolean,
    validation        jsonb NOT NULL DEFAULT '{}'::jsonb,
    confidence        double precision CHECK (confidence IS NULL OR confidence BETWEEN 0 AND 1),
    override_by       text,
    attempt_id        uuid,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    decided_by        text,
    decided_at        timestamptz,
    decision_reason   text,
    applied_commit    text,
    error             text
);
CREATE INDEX agent_proposals_session_idx ON agent_proposals (session_id, created_at);
CREATE INDEX agent_proposals_status_idx ON agent_proposals (status);
