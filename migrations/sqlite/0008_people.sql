-- Issue 18 (the web console): API tokens an admin creates (and revokes) on the console are
-- kept beside the first-start admin token, hashed only. `created_by` names the admin who
-- created one; it is empty for the daemon's own first-start token, which configured tokens
-- disable (a console-created token stays in force beside the configured ones).
ALTER TABLE api_tokens ADD COLUMN created_by TEXT;
