"""``python -m services.notify``: serve the notify API on ``NOTIFY_PORT`` (8004)."""

from services.notify.app import create_app
from services.notify.settings import NotifySettings
from shared.service import serve

if __name__ == "__main__":
    settings = NotifySettings()
    serve(create_app(settings), host=settings.host, port=settings.notify_port)
