-- One row the readiness check writes (and commits) each time it asks: the store takes writes.
CREATE TABLE IF NOT EXISTS readiness (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL
);
