-- How far the trips table has landed: the latest trip start it holds (BigQuery SQL, like window.sql).
-- A window [start, end) is complete once a trip at or after `end` has landed.
SELECT MAX(trip_start_timestamp) AS latest_trip_start
FROM {source_table}
