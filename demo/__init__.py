"""`uptake demo`: a simulated SaaS product posting ~90 days of usage through the ingest API."""
