-- First start of the compose PostgreSQL: one database per store, owned by the hub role
-- (POSTGRES_USER). Dagster's instance, the warehouse and MLflow each migrate their own schema.
CREATE DATABASE dagster;
CREATE DATABASE warehouse;
CREATE DATABASE mlflow;
