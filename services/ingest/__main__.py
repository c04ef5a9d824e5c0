"""``python -m services.ingest``: serve the ingest API on ``INGEST_PORT`` (8001)."""

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.service import serve

if __name__ == "__main__":
    settings = IngestSettings()
    serve(create_app(settings), host=settings.host, port=settings.ingest_port)
