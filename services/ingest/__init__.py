"""Ingest: the Segment-compatible tracking API in front of Kafka."""
