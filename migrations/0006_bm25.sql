-- BM25 text side: an impact-ordered inverted index kept in PostgreSQL itself (no extension).
--
-- Terms are the lexemes of rag_chunks.tsv (to_tsvector('english', heading_path || ' ' || content)),
-- so ingest, backfill and queries share one tokenisation: PostgreSQL's. Every change to rag_chunks
-- (COPY, INSERT, DELETE, cascaded deletes, UPDATEs that change the text) maintains the postings
-- and the statistics in the same transaction, through the statement triggers below; readers see
-- postings, document frequencies and corpus size from one snapshot.
--
-- Score (bm25s/Lucene variant): sum over query terms of
--     idf(t) * tf / (tf + k1 * (1 - b + b * len / avgdl)),   idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))
-- The stored `impact` is the tf part computed with ref_avgdl (the average length when the index
-- was last built); it only orders a term's postings so that search reads the best few first.
-- Scores are always recomputed from tf, len and the current N, df and avgdl.

CREATE TABLE rag_text_stats (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    chunks     bigint NOT NULL DEFAULT 0,            -- N
    total_len  bigint NOT NULL DEFAULT 0,            -- sum of chunk lengths (lexeme occurrences)
    ref_avgdl  double precision,                     -- avgdl the stored impacts were computed with
    k1         double precision NOT NULL DEFAULT 1.2,
    b          double precision NOT NULL DEFAULT 0.75
);
INSERT INTO rag_text_stats DEFAULT VALUES;

CREATE TABLE rag_terms (
    id    integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    term  text COLLATE "C" NOT NULL UNIQUE,
    df    integer NOT NULL CHECK (df >= 0)
);

CREATE TABLE rag_postings (
    chunk_id  bigint NOT NULL,
    term_id   integer NOT NULL,
    tf        integer NOT NULL,
    len       integer NOT NULL,   -- the chunk's length in lexeme occurrences
    impact    real NOT NULL,      -- tf / (tf + k1 (1 - b + b len / ref_avgdl)): ordering key only
    PRIMARY KEY (chunk_id, term_id) INCLUDE (tf, len)
);
-- A term's best postings first: search reads LIMIT n per query term, never all matches, from
-- the index alone (it carries tf and len).
CREATE INDEX rag_postings_impact_idx ON rag_postings (term_id, impact DESC, chunk_id)
    INCLUDE (tf, len);

-- A tsvector's terms and their frequencies (positions are capped at 256 per lexeme by PostgreSQL).
CREATE FUNCTION rag_tsv_terms(tsv tsvector)
RETURNS TABLE (term text, tf integer)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT lexeme, coalesce(array_length(positions, 1), 1) FROM unnest(tsv) $$;

-- Add chunks to the index. Takes the statistics row lock first: text-index writers serialise on
-- it (the rest of an ingest, embedding included, runs outside), so term rows are never locked in
-- two orders and the statistics never lose an update.
CREATE FUNCTION rag_text_add(chunk_ids bigint[], tsvs tsvector[]) RETURNS void
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
                             nullif((total_len + added_len)::float8 / (chunks + cardinality(chunk_ids)), 0))
    RETURNING * INTO s;

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

-- Recompute every stored impact with the current average length.
CREATE FUNCTION rag_text_reimpact() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s rag_text_stats;
BEGIN
    UPDATE rag_text_stats SET ref_avgdl = nullif(total_len::float8 / nullif(chunks, 0), 0)
    RETURNING * INTO s;
    UPDATE rag_postings SET
        impact = tf / (tf + s.k1 * (1 - s.b + s.b * len / coalesce(s.ref_avgdl, 1)));
END $$;

-- Remove chunks from the index (their postings, their share of df, N and total length). Terms
-- whose df drops to 0 stay in the dictionary with no postings.
CREATE FUNCTION rag_text_remove(chunk_ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
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
END $$;

CREATE FUNCTION rag_chunks_text_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rag_text_add(array_agg(id), array_agg(tsv)) FROM new_chunks;
    RETURN NULL;
END $$;

CREATE FUNCTION rag_chunks_text_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rag_text_remove(array_agg(id)) FROM old_chunks;
    RETURN NULL;
END $$;

-- Only rows whose text changed are re-indexed (re-embedding updates every row, not its text).
CREATE FUNCTION rag_chunks_text_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rag_text_remove(array_agg(o.id))
    FROM old_chunks o JOIN new_chunks n ON n.id = o.id WHERE o.tsv IS DISTINCT FROM n.tsv;
    PERFORM rag_text_add(array_agg(n.id), array_agg(n.tsv))
    FROM old_chunks o JOIN new_chunks n ON n.id = o.id WHERE o.tsv IS DISTINCT FROM n.tsv;
    RETURN NULL;
END $$;

CREATE TRIGGER rag_chunks_text_insert AFTER INSERT ON rag_chunks
    REFERENCING NEW TABLE AS new_chunks FOR EACH STATEMENT EXECUTE FUNCTION rag_chunks_text_inserted();
CREATE TRIGGER rag_chunks_text_delete AFTER DELETE ON rag_chunks
    REFERENCING OLD TABLE AS old_chunks FOR EACH STATEMENT EXECUTE FUNCTION rag_chunks_text_deleted();
CREATE TRIGGER rag_chunks_text_update AFTER UPDATE ON rag_chunks
    REFERENCING OLD TABLE AS old_chunks NEW TABLE AS new_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION rag_chunks_text_updated();

-- Rebuild the whole index from rag_chunks (backfill of stores made before this migration, and
-- `qwb reindex --text`), in batches of chunk ids; recomputes N, df, total length and every impact.
CREATE FUNCTION rag_text_rebuild(batch integer DEFAULT 20000) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    last_id bigint := 0;
    ids bigint[];
    tsvs tsvector[];
    s rag_text_stats;
BEGIN
    PERFORM 1 FROM rag_text_stats FOR UPDATE;
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
    SELECT * INTO s FROM rag_text_stats;
    IF s.chunks > 0 AND s.ref_avgdl IS DISTINCT FROM s.total_len::float8 / s.chunks THEN
        PERFORM rag_text_reimpact();
    END IF;
    RETURN s.chunks;
END $$;

SELECT rag_text_rebuild();
