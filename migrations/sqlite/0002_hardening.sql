-- Issue 12 (hardening). When a delivery's first attempt started: how far back a reconcile
-- looks, and how old a LINE retry key is. Set by the first claim, never changed after.
ALTER TABLE deliveries ADD COLUMN first_attempt_at BIGINT;
