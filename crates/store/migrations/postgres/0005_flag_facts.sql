-- What each flag's history says for its lifecycle (`dimmer_engine::policy::HistoryFacts` as JSON),
-- kept up to date in the transaction of every definition write, so that the lifecycle of every
-- flag is one read of this table instead of a replay of the audit log. NULL for a flag written
-- before this column existed: its facts are then replayed from the audit log once it is read.
ALTER TABLE flags ADD COLUMN facts TEXT;
