"""Build the MIME email for one delivery (multipart text + HTML, RFC 8058 headers). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from services.notify.rendering import RenderedEmail


def _clean(value: str | None) -> str:
    """No CR/LF (header injection) and no surrounding space."""
    return " ".join((value or "").split())


@dataclass(frozen=True)
class EmailHeaders:
    from_address: str
    from_name: str | None
    to_address: str
    to_name: str | None
    message_id: str
    date: datetime
    reply_to: str | None = None
    unsubscribe_url: str | None = None
    unsubscribe_mailto: str | None = None
    delivery_id: str | None = None


def message_id_for(delivery_id: str, from_address: str) -> str:
    """Stable per delivery: a resend after a crash carries the same Message-ID."""
    domain = from_address.rpartition("@")[2] or "uptake.local"
    return f"<{delivery_id}@{domain}>"


def compose_email(rendered: RenderedEmail, headers: EmailHeaders) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = formataddr((_clean(headers.from_name), headers.from_address))
    msg["To"] = formataddr((_clean(headers.to_name), headers.to_address))
    msg["Subject"] = _clean(rendered.subject)
    msg["Date"] = format_datetime(headers.date)
    msg["Message-ID"] = headers.message_id
    if headers.reply_to:
        msg["Reply-To"] = _clean(headers.reply_to)
    unsubscribe = [f"<{u}>" for u in (headers.unsubscribe_url, headers.unsubscribe_mailto) if u]
    if unsubscribe:
        msg["List-Unsubscribe"] = ", ".join(unsubscribe)
        if headers.unsubscribe_url and headers.unsubscribe_url.startswith("https://"):
            # RFC 8058 one-click is for https links only (section 3.1)
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if headers.delivery_id:
        msg["X-Uptake-Delivery"] = headers.delivery_id
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(rendered.text or rendered.subject)
    if rendered.html:
        msg.add_alternative(rendered.html, subtype="html")
    return msg
