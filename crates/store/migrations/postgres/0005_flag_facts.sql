-- What the lifecycle reads of each flag, as JSON: the definition's kind and owner and what its
-- history says (`dimmer_engine::policy::HistoryFacts`), kept up to date in the transaction of
-- every definition write, so that the lifecycle of every flag is one read of small rows instead
-- of every definition and a replay of the audit log. NULL for a flag written before this column
-- existed: its facts are then replayed from the audit log when read, and kept from its next write.
ALTER TABLE flags ADD COLUMN facts TEXT;
