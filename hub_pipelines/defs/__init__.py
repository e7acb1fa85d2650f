"""One folder per domain (ingest, rollups, ml, publish), each exporting its own `defs`."""
