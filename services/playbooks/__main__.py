"""``python -m services.playbooks``: serve the playbooks API on ``PLAYBOOKS_PORT`` (8003)."""

from services.playbooks.app import create_app
from services.playbooks.settings import PlaybooksSettings
from shared.service import serve

if __name__ == "__main__":
    settings = PlaybooksSettings()
    serve(create_app(settings), host=settings.host, port=settings.playbooks_port)
