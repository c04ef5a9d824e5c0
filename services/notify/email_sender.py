"""Send one email: SMTP through aiosmtplib, or a ``.eml`` file in the dev outbox.

SMTP answers are turned into a :class:`SendResult`: 4xx and connection trouble are
temporary (retried); 5xx, and a server without what the settings require (STARTTLS, AUTH),
permanent.
"""

from __future__ import annotations

import asyncio
import os
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from services.notify.retry import SendResult, classify_smtp_code
from services.notify.settings import NotifySettings


def write_outbox_file(directory: Path, name: str, data: bytes) -> Path:
    """Atomic write (tmp + rename): a crash never leaves half a file; rewriting is harmless."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = directory / f".{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


class EmailSender:
    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings

    @property
    def mode(self) -> str:
        return "smtp" if self.settings.smtp_host else "outbox"

    async def send(self, message: EmailMessage, *, delivery_id: str) -> SendResult:
        if not self.settings.smtp_host:
            path = await asyncio.to_thread(
                write_outbox_file,
                self.settings.outbox_dir,
                f"{delivery_id}.eml",
                bytes(message),
            )
            return SendResult.sent(f"outbox:{path.name}")
        return await self._send_smtp(message)

    async def _send_smtp(self, message: EmailMessage) -> SendResult:
        s = self.settings
        try:
            errors, response = await aiosmtplib.send(
                message,
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password,
                start_tls=False if s.smtp_port == 465 else s.smtp_starttls,
                use_tls=s.smtp_port == 465,
                timeout=s.smtp_timeout_seconds,
                cert_bundle=str(s.smtp_ca_file) if s.smtp_ca_file else None,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            worst = max((r.code for r in exc.recipients), default=550)
            return classify_smtp_code(worst, str(exc))
        except aiosmtplib.SMTPResponseException as exc:
            return classify_smtp_code(exc.code, exc.message)
        except (OSError, TimeoutError) as exc:  # aiosmtplib's connect/timeout/disconnect too
            return SendResult.temporary(f"SMTP connection: {type(exc).__name__}: {exc}")
        except aiosmtplib.SMTPException as exc:
            # Neither an answer code nor the network: the server lacks what the settings ask
            # (STARTTLS not offered, AUTH not supported, SMTPUTF8...). Retrying cannot help.
            return SendResult.permanent(f"SMTP configuration: {type(exc).__name__}: {exc}")
        if errors:
            code = max(r.code for r in errors.values())
            return classify_smtp_code(code, "; ".join(r.message for r in errors.values()))
        return SendResult.sent(response[:500])
