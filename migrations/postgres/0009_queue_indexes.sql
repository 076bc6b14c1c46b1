-- Issue 19 (the cost of a delivery): fewer index entries written per delivery.
-- `delivery_attempts_newest` repeated the primary key (a B-tree reads backwards as well as
-- forwards), and every change of a delivery's status wrote a new entry into
-- `deliveries_by_status`. What that index served — is anything of an announcement left to
-- do? — needs only the deliveries still open; counts by status read the announcement's
-- rows through `deliveries_unit`, which starts with the announcement too.
DROP INDEX delivery_attempts_newest;
DROP INDEX deliveries_by_status;
CREATE INDEX deliveries_open ON deliveries (announcement_id)
    WHERE status IN ('pending', 'in_flight', 'retrying');
