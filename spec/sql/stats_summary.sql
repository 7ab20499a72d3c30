-- stats_summary.sql: Traffic Ops' stats_summary table, as traffic_ops/app/db/create_tables.sql
-- defines it (columns, types and defaults as there). Loaded by scripts/lib/pg.sh into the test database
-- that tstats' PostgreSQL sink (C side, src/pg.c) writes daily summaries to.
-- Deliberately no unique key: Traffic Ops has none, so duplicates are the writer's problem.

CREATE SEQUENCE IF NOT EXISTS stats_summary_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

CREATE TABLE IF NOT EXISTS stats_summary (
    id bigint DEFAULT nextval('stats_summary_id_seq'::regclass) NOT NULL,
    cdn_name text DEFAULT 'all'::text NOT NULL,
    deliveryservice_name text NOT NULL,
    stat_name text NOT NULL,
    stat_value double precision NOT NULL,
    summary_time timestamp with time zone DEFAULT now() NOT NULL,
    stat_date date,
    CONSTRAINT idx_89740_primary PRIMARY KEY (id)
);

ALTER SEQUENCE stats_summary_id_seq OWNED BY stats_summary.id;
