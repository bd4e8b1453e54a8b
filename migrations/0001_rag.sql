-- Document memory: one row per source document, one row per chunk with its vector.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE rag_documents (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    source_key    text NOT NULL UNIQUE,
    source_path   text,
    source_url    text,
    doc_type      text NOT NULL CHECK (doc_type IN ('adr', 'provider_doc', 'dag', 'troubleshooting',
                      'guide', 'policy', 'example', 'api_doc', 'readme', 'runbook', 'other')),
    title         text,
    content_hash  text NOT NULL,
    content       text NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
    chunk_count   integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rag_documents_doc_type_idx ON rag_documents (doc_type);
CREATE INDEX rag_documents_metadata_idx ON rag_documents USING gin (metadata jsonb_path_ops);
CREATE INDEX rag_documents_source_path_idx ON rag_documents (source_path text_pattern_ops);
CREATE INDEX rag_documents_updated_at_idx ON rag_documents (updated_at);

CREATE TABLE rag_chunks (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id      uuid NOT NULL REFERENCES rag_documents (id) ON DELETE CASCADE,
    chunk_index      integer NOT NULL,
    heading_path     text NOT NULL DEFAULT '',
    content          text NOT NULL,
    tsv              tsvector GENERATED ALWAYS AS
                         (to_tsvector('english', heading_path || ' ' || content)) STORED,
    embedding        vector(384) NOT NULL,
    embedding_model  text NOT NULL,
    UNIQUE (document_id, chunk_index)
);
CREATE INDEX rag_chunks_embedding_idx ON rag_chunks
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX rag_chunks_tsv_idx ON rag_chunks USING gin (tsv);
CREATE INDEX rag_chunks_model_idx ON rag_chunks (embedding_model);

-- Which embedding model the store's vectors come from (one per store).
CREATE TABLE store_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
