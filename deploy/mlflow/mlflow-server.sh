#!/bin/sh
# hub's MLflow tracking server: PostgreSQL backend store (runs, metrics, the model registry),
# artifacts in an S3-compatible bucket served through the server (--serve-artifacts), so that
# clients (the code server, run workers, Celery workers, notebooks) need only MLFLOW_TRACKING_URI.
#
# Read from the environment (README, "Going to production"):
#   MLFLOW_BACKEND_STORE_URI      postgresql+psycopg2://USER:PASSWORD@HOST:5432/mlflow   (required)
#   MLFLOW_ARTIFACTS_DESTINATION  s3://BUCKET/mlflow                                     (required)
#   MLFLOW_S3_ENDPOINT_URL        http://minio:9000 for an S3-compatible store; unset for AWS S3
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION   the bucket's credentials
#   MLFLOW_SERVER_ALLOWED_HOSTS   Host headers accepted, e.g. mlflow,mlflow:5000,localhost:5000
#   MLFLOW_HOST (0.0.0.0), MLFLOW_PORT (5000), MLFLOW_WORKERS (2)
# The server runs its own database migrations on start (a fresh database takes ~30 s).
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI, e.g. postgresql+psycopg2://mlflow:PASSWORD@postgres:5432/mlflow}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION, e.g. s3://hub-mlflow/artifacts}"
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1
exec mlflow server \
  --host "${MLFLOW_HOST:-0.0.0.0}" \
  --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-2}" \
  --serve-artifacts
