-- The listing's order (newest first, then id) as an index of its own: a page is found in the
-- index alone (the rows read are only the page's), and the unfiltered count reads no rows.
CREATE INDEX IF NOT EXISTS jobs_listing ON jobs(created_at DESC, id);
