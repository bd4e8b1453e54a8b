-- The text cache (core/text_cache.py) is a tantivy index of the postings kept beside the
-- database, per host: a derived copy that picks a search's BM25 candidates in a few ms. It must
-- know when it holds exactly what a search's snapshot holds, and what changed since.
--   generation  bumped by every change to the postings, under the statistics row lock that
--               text-index writers already hold (rag_text_add / rag_text_remove take it
--               first), so generations commit in order;
--   cache_id    names the index the cache copies: a new one whenever the postings are
--               truncated (rag_text_rebuild, `qwb reindex --text`);
--   log_from    the generation rag_text_changes is complete from: an older cache rebuilds;
--   log_keep    how many generations the log keeps: once it holds twice as many, log_from
--               moves up to the last log_keep and the rows below it go (a cache further
--               behind rebuilds, which it would rather do than replay that much anyway).
-- rag_text_changes says which chunks each generation added or removed. A chunk's `added` row
-- is dropped when it is removed (a cache that never saw it need not add it).
ALTER TABLE rag_text_stats
    ADD COLUMN generation bigint NOT NULL DEFAULT 0,
    ADD COLUMN cache_id uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN log_from bigint NOT NULL DEFAULT 0,
    ADD COLUMN log_keep bigint NOT NULL DEFAULT 100000 CHECK (log_keep > 0);

CREATE TABLE rag_text_changes (
    generation bigint NOT NULL,
    chunk_id   bigint NOT NULL,
    added      boolean NOT NULL
);
CREATE INDEX rag_text_changes_generation_idx ON rag_text_changes (generation);
CREATE INDEX rag_text_changes_chunk_idx ON rag_text_changes (chunk_id) WHERE added;

-- One generation: these chunks were added (or removed). Called after rag_text_add /
-- rag_text_remove, whose row lock it relies on.
CREATE FUNCTION rag_text_log(chunk_ids bigint[], added boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s rag_text_stats;
    g bigint;
BEGIN
    IF coalesce(cardinality(chunk_ids), 0) = 0 THEN
        RETURN;
    END IF;
    UPDATE rag_text_stats SET generation = generation + 1 RETURNING * INTO s;
    g := s.generation;
    IF g - s.log_from > 2 * s.log_keep THEN
        UPDATE rag_text_stats SET log_from = g - s.log_keep;
        DELETE FROM rag_text_changes WHERE generation < g - s.log_keep;
    END IF;
    IF NOT added THEN
        DELETE FROM rag_text_changes WHERE chunk_id = ANY(chunk_ids) AND rag_text_changes.added;
    END IF;
    INSERT INTO rag_text_changes (generation, chunk_id, added)
    SELECT g, id, added FROM unnest(chunk_ids) AS x(id);
END $$;

-- The statement triggers of 0006, each now also logging what it changed.
CREATE OR REPLACE FUNCTION rag_chunks_text_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rag_text_add(array_agg(id), array_agg(tsv)) FROM new_chunks;
    PERFORM rag_text_log(array_agg(id), true) FROM new_chunks;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION rag_chunks_text_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rag_text_remove(array_agg(id)) FROM old_chunks;
    PERFORM rag_text_log(array_agg(id), false) FROM old_chunks;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION rag_chunks_text_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changed bigint[];
BEGIN
    SELECT array_agg(o.id) INTO changed
    FROM old_chunks o JOIN new_chunks n ON n.id = o.id WHERE o.tsv IS DISTINCT FROM n.tsv;
    PERFORM rag_text_remove(changed);
    PERFORM rag_text_log(changed, false);
    PERFORM rag_text_add(array_agg(n.id), array_agg(n.tsv))
    FROM old_chunks o JOIN new_chunks n ON n.id = o.id WHERE o.tsv IS DISTINCT FROM n.tsv;
    PERFORM rag_text_log(changed, true);
    RETURN NULL;
END $$;

-- Truncating the postings (rag_text_rebuild) starts another index: a new cache_id, an empty log.
CREATE FUNCTION rag_postings_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM rag_text_changes;
    UPDATE rag_text_stats SET generation = generation + 1, cache_id = gen_random_uuid(),
                              log_from = generation + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER rag_postings_truncate AFTER TRUNCATE ON rag_postings
    FOR EACH STATEMENT EXECUTE FUNCTION rag_postings_truncated();
