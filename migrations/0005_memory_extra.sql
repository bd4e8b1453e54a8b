-- Troubleshooting memory, extras: the normalised fix each attempt tried (core.signatures
-- normalize_solution), so "success rate of this fix for this signature" is one indexed GROUP BY,
-- and an index for the per-session repeated-failure query.
ALTER TABLE troubleshooting_attempts ADD COLUMN solution_key text;
UPDATE troubleshooting_attempts
   SET solution_key = lower(regexp_replace(btrim(attempted_solution), '\s+', ' ', 'g'))
 WHERE solution_key IS NULL;
CREATE INDEX troubleshooting_fix_idx ON troubleshooting_attempts (error_signature, solution_key);
CREATE INDEX troubleshooting_session_sig_idx ON troubleshooting_attempts (session_id, error_signature);
CREATE INDEX troubleshooting_outcome_changed_idx ON troubleshooting_outcome_updates (changed_at);
