"""``panopticon ingest``: the OTLP/HTTP receiver (see ingest/README.md)."""
