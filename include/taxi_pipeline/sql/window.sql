-- One split of a window of taxi trips, in BigQuery SQL (after the Kubeflow taxi example's query).
-- The single source of the window cut: BigQuery runs it as is; the local platform translates it to
-- DuckDB (taxi_pipeline.queries). Parameters: @window_start, @window_end (TIMESTAMP strings, [start, end)),
-- @split ('train' | 'eval'). The FROM table is filled in per platform.
-- The split is a hash of unique_key: deterministic, about 2/3 train and 1/3 eval.
SELECT
  unique_key,
  pickup_community_area,
  fare,
  EXTRACT(MONTH FROM trip_start_timestamp) AS trip_start_month,
  EXTRACT(HOUR FROM trip_start_timestamp) AS trip_start_hour,
  EXTRACT(DAYOFWEEK FROM trip_start_timestamp) AS trip_start_day,
  UNIX_SECONDS(trip_start_timestamp) AS trip_start_timestamp,
  pickup_latitude,
  pickup_longitude,
  dropoff_latitude,
  dropoff_longitude,
  trip_miles,
  pickup_census_tract,
  dropoff_census_tract,
  payment_type,
  company,
  trip_seconds,
  dropoff_community_area,
  tips
FROM {source_table}
WHERE
  pickup_latitude IS NOT NULL
  AND trip_start_timestamp >= TIMESTAMP(@window_start)
  AND trip_start_timestamp < TIMESTAMP(@window_end)
  AND IF(MOD(CAST(CONCAT('0x', SUBSTR(TO_HEX(MD5(unique_key)), 1, 8)) AS INT64), 3) = 0, 'eval', 'train') = @split
ORDER BY unique_key
