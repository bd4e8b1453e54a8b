-- The text cache (core/text_cache.py) is a tantivy index of the postings kept beside the
-- database, per host: a derived copy that picks a search's BM25 candidates in a few ms where
-- reading the postings takes tens. It must know when it holds exactly what a search's snapshot
-- holds, and what changed since. Text-index writers already serialise on the statistics row
-- (rag_text_add / rag_text_remove lock it first), so a counter there commits in order:
--   generation  bumped by every add and every removal of chunks;
--   cache_id    names the index the cache copies (a new one on every full rebuild);
--   log_from    the generation rag_text_changes is complete from: an older cache rebuilds.
-- rag_text_changes says which chunks each generation added or removed. A chunk's `added` row
-- is dropped when it is removed (a cache that never saw it need not add it), so the log holds
-- one row per chunk added since log_from, plus the removals.
ALTER TABLE rag_text_stats
    ADD COLUMN generation bigint NOT NULL DEFAULT 0,
    ADD COLUMN cache_id uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN log_from bigint NOT NULL DEFAULT 0;

CREATE TABLE rag_text_changes (
    generation bigint NOT NULL,
    chunk_id   bigint NOT NULL,
    added      boolean NOT NULL
);
CREATE INDEX rag_text_changes_generation_idx ON rag_text_changes (generation);
CREATE INDEX rag_text_changes_chunk_idx ON rag_text_changes (chunk_id) WHERE added;

-- Whether this transaction is rebuilding the whole index (no log: the cache rebuilds too).
CREATE FUNCTION rag_text_rebuilding() RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT coalesce(current_setting('qwb.text_rebuild', true), '') = 'on' $$;

CREATE OR REPLACE FUNCTION rag_text_add(chunk_ids bigint[], tsvs tsvector[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s rag_text_stats;
    added_len bigint;
BEGIN
    IF coalesce(cardinality(chunk_ids), 0) = 0 THEN
        RETURN;
    END IF;
    PERFORM 1 FROM rag_text_stats FOR UPDATE;
    SELECT coalesce(sum(t.tf), 0) INTO added_len
    FROM unnest(tsvs) AS x(tsv) CROSS JOIN LATERAL rag_tsv_terms(x.tsv) t;
    UPDATE rag_text_stats SET
        chunks = chunks + cardinality(chunk_ids),
        total_len = total_len + added_len,
        ref_avgdl = coalesce(ref_avgdl,
                             nullif((total_len + added_len)::float8 / (chunks + cardinality(chunk_ids)), 0)),
        generation = generation + 1
    RETURNING * INTO s;
    IF NOT rag_text_rebuilding() THEN
        INSERT INTO rag_text_changes (generation, chunk_id, added)
        SELECT s.generation, id, true FROM unnest(chunk_ids) AS x(id);
    END IF;

    WITH toks AS MATERIALIZED (
        SELECT x.id AS chunk_id, t.term, t.tf, (sum(t.tf) OVER (PARTITION BY x.id))::integer AS len
        FROM unnest(chunk_ids, tsvs) AS x(id, tsv) CROSS JOIN LATERAL rag_tsv_terms(x.tsv) t
    ), counts AS (
        SELECT term, count(*)::integer AS df FROM toks GROUP BY term ORDER BY term
    ), upserted AS (
        INSERT INTO rag_terms AS r (term, df) SELECT term, df FROM counts ORDER BY term
        ON CONFLICT (term) DO UPDATE SET df = r.df + EXCLUDED.df
        RETURNING r.id, r.term
    )
    INSERT INTO rag_postings (chunk_id, term_id, tf, len, impact)
    SELECT k.chunk_id, u.id, k.tf, k.len,
           k.tf / (k.tf + s.k1 * (1 - s.b + s.b * k.len / coalesce(s.ref_avgdl, 1)))
    FROM toks k JOIN upserted u ON u.term = k.term;

    -- While the store is small its average length still moves: keep the ordering key close.
    IF s.chunks <= 10000 AND s.ref_avgdl IS NOT NULL AND s.total_len > 0
       AND abs(s.total_len::float8 / s.chunks / s.ref_avgdl - 1) > 0.25 THEN
        PERFORM rag_text_reimpact();
    END IF;
END $$;

CREATE OR REPLACE FUNCTION rag_text_remove(chunk_ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    g bigint;
BEGIN
    IF coalesce(cardinality(chunk_ids), 0) = 0 THEN
        RETURN;
    END IF;
    PERFORM 1 FROM rag_text_stats FOR UPDATE;
    WITH gone AS (
        DELETE FROM rag_postings WHERE chunk_id = ANY(chunk_ids) RETURNING term_id, tf
    ), per_term AS (
        SELECT term_id, count(*)::integer AS n, sum(tf) AS len FROM gone GROUP BY term_id
    ), stats AS (  -- data-modifying: runs to completion though nothing reads it
        UPDATE rag_text_stats SET
            chunks = greatest(chunks - cardinality(chunk_ids), 0),
            total_len = greatest(total_len - (SELECT coalesce(sum(len), 0) FROM per_term), 0)
        RETURNING 1
    )
    UPDATE rag_terms r SET df = r.df - g.n FROM per_term g WHERE r.id = g.term_id;
    UPDATE rag_text_stats SET generation = generation + 1 RETURNING generation INTO g;
    IF NOT rag_text_rebuilding() THEN
        DELETE FROM rag_text_changes WHERE chunk_id = ANY(chunk_ids) AND added;
        INSERT INTO rag_text_changes (generation, chunk_id, added)
        SELECT g, id, false FROM unnest(chunk_ids) AS x(id);
    END IF;
END $$;

-- As in 0006, and: no log while rebuilding; the log restarts empty under a new cache_id.
CREATE OR REPLACE FUNCTION rag_text_rebuild(batch integer DEFAULT 20000) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    last_id bigint := 0;
    ids bigint[];
    tsvs tsvector[];
    s rag_text_stats;
BEGIN
    PERFORM 1 FROM rag_text_stats FOR UPDATE;
    PERFORM set_config('qwb.text_rebuild', 'on', true);
    TRUNCATE rag_postings;
    DELETE FROM rag_terms;
    UPDATE rag_text_stats SET chunks = 0, total_len = 0, ref_avgdl = NULL;
    LOOP
        SELECT array_agg(id ORDER BY id), array_agg(tsv ORDER BY id) INTO ids, tsvs
        FROM (SELECT id, tsv FROM rag_chunks WHERE id > last_id ORDER BY id LIMIT batch) c;
        EXIT WHEN ids IS NULL;
        PERFORM rag_text_add(ids, tsvs);
        last_id := ids[cardinality(ids)];
    END LOOP;
    PERFORM set_config('qwb.text_rebuild', 'off', true);
    DELETE FROM rag_text_changes;
    UPDATE rag_text_stats SET generation = generation + 1, cache_id = gen_random_uuid(),
                              log_from = generation + 1;
    SELECT * INTO s FROM rag_text_stats;
    IF s.chunks > 0 AND s.ref_avgdl IS DISTINCT FROM s.total_len::float8 / s.chunks THEN
        PERFORM rag_text_reimpact();
    END IF;
    RETURN s.chunks;
END $$;
