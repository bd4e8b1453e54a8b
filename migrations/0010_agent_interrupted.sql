-- Agents: a run stopped by Ctrl-C, SIGTERM or a cancelled MCP call is recorded as 'interrupted'
-- (its open decisions are closed as 'cancelled'), not left 'active' forever.

ALTER TABLE agent_sessions DROP CONSTRAINT IF EXISTS agent_sessions_status_check;
ALTER TABLE agent_sessions ADD CONSTRAINT agent_sessions_status_check
    CHECK (status IN ('active', 'waiting_approval', 'escalated', 'completed', 'failed', 'rejected',
                      'interrupted'));
