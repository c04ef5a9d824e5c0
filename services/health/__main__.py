"""``python -m services.health``: serve the health API on ``HEALTH_PORT`` (8002)."""

from services.health.app import create_app
from services.health.settings import HealthSettings
from shared.service import serve

if __name__ == "__main__":
    settings = HealthSettings()
    serve(create_app(settings), host=settings.host, port=settings.health_port)
