-- Jobs that start at a given time (`scheduled_at`, seconds since the epoch): status `scheduled`
-- until then. A worker claims one when it is due.
ALTER TABLE jobs ADD COLUMN scheduled_at REAL;
