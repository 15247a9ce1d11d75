-- A job's signed statements (its provenance, written when it is packed, and the receipt of its
-- last run), kept in the same transaction as the state they belong to: committed with `packed`
-- and with the final state, never one without the other, and without a file (and its fsync) of
-- their own. Jobs packed before this migration keep theirs as files beside the artifact, which
-- are still read. Removed with the job, and when retention collects its files.
CREATE TABLE IF NOT EXISTS job_documents (
    job_id TEXT NOT NULL,
    kind   TEXT NOT NULL,               -- 'provenance' or 'receipt'
    body   BLOB NOT NULL,               -- the DSSE envelope, JSON
    PRIMARY KEY (job_id, kind)
);
