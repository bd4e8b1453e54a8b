-- Keep each chunk's vector inside its row. A 384-d vector is 1.5 kB; with the chunk's text the
-- row passed PostgreSQL's 2 kB TOAST threshold and the vector was moved out of line, so every
-- distance read from the table (the vector side's candidates, exact scans under a filter, the
-- similarity of the rows shown) fetched it from the TOAST table: about three pages per chunk.
-- STORAGE MAIN moves the text out first and the vector only as a last resort.
ALTER TABLE rag_chunks ALTER COLUMN embedding SET STORAGE MAIN;

-- Rewrites a store's vectors in place so the rows written before this migration keep them
-- inline too (a fresh value: the toaster reuses an unchanged out-of-line one). Returns how many.
CREATE FUNCTION rag_vectors_inline() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    UPDATE rag_chunks SET embedding = (embedding::real[])::vector(384);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Small stores are rewritten now (about 2,000 chunks a second); a larger one keeps its old rows
-- as they are until `qwb reindex --inline-vectors` (new rows are inline either way).
DO $$
BEGIN
    IF (SELECT count(*) FROM rag_chunks) <= 20000 THEN
        PERFORM rag_vectors_inline();
    END IF;
END $$;
