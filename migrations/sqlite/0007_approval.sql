-- Issue 18: the console's approval step ([console] approval = "staff"). A staff post waits
-- in status `awaiting_approval` until a second person approves it (it is released) or
-- returns it with a comment (it is cancelled, and the comment is kept for its author).
ALTER TABLE announcements ADD COLUMN reviewed_by TEXT;
ALTER TABLE announcements ADD COLUMN reviewed_at BIGINT;
ALTER TABLE announcements ADD COLUMN review_note TEXT;
