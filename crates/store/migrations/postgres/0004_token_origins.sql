-- The browser origins a token may be used from (a JSON array of `scheme://host[:port]`); empty:
-- the server-wide CORS setting alone decides.
ALTER TABLE tokens ADD COLUMN origins TEXT NOT NULL DEFAULT '[]';
