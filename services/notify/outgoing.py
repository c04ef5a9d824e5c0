"""The message one delivery sends: context, rendering, tracking links, MIME headers. No I/O."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from services.notify.compose import EmailHeaders, compose_email, message_id_for
from services.notify.links import LinkBuilder
from services.notify.models import Delivery
from services.notify.rendering import (
    RenderedEmail,
    RenderedSlack,
    TemplateSpec,
    add_tracking,
    build_context,
    recipient_context,
    render_email,
    render_slack,
)
from services.notify.settings import NotifySettings


def unsubscribe_mailbox(sender: str) -> str:
    return f"unsubscribe@{sender.rpartition('@')[2] or 'uptake.local'}"


class OutgoingMessages:
    def __init__(self, settings: NotifySettings, clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.clock = clock
        self.links = LinkBuilder(settings.secret, settings.public_base_url)
        self.mailbox = settings.unsubscribe_mailto or unsubscribe_mailbox(settings.sender_address)

    def context(self, d: Delivery) -> dict[str, Any]:
        """The request's context over the defaults, with this delivery's own recipient
        (``recipient.*``, ``contact_name``): built per delivery, never shared."""
        recipient = recipient_context(
            name=d.recipient_name,
            email=d.recipient if d.channel == "email" else None,
            role=d.recipient_role,
        )
        return build_context(d.context or {}, recipient=recipient, csm_name=d.from_name)

    def slack(self, d: Delivery, template: TemplateSpec) -> RenderedSlack:
        return render_slack(template, self.context(d))

    def email(self, d: Delivery, template: TemplateSpec) -> EmailMessage:
        """Raises :class:`RenderError` when the template does not render."""
        assert d.recipient is not None
        unsubscribe = self.links.unsubscribe(d.id, d.recipient) if d.automated else None
        rendered = render_email(template, {**self.context(d), "unsubscribe_url": unsubscribe})
        rendered = RenderedEmail(
            subject=rendered.subject,
            text=rendered.text,
            html=self._tracked(d, rendered.html) if rendered.html else "",
        )
        s = self.settings
        headers = EmailHeaders(
            from_address=s.sender_address,
            from_name=d.from_name or s.sender_name or None,
            to_address=d.recipient,
            to_name=d.recipient_name,
            reply_to=d.reply_to,
            message_id=message_id_for(d.id, s.sender_address),
            date=self.clock(),
            unsubscribe_url=unsubscribe,
            unsubscribe_mailto=(
                self.links.unsubscribe_mailto(self.mailbox, d.id, d.recipient)
                if d.automated
                else None
            ),
            delivery_id=d.id,
        )
        return compose_email(rendered, headers)

    def _tracked(self, d: Delivery, html: str) -> str:
        """Outbound links through the click redirect (our own links stay), plus the pixel."""
        base = self.settings.public_base_url.rstrip("/") + "/"

        def click(url: str) -> str:
            return url if url.startswith(base) else self.links.click(d.id, url)

        return add_tracking(
            html,
            click_url=click if self.settings.track_clicks else None,
            pixel_url=self.links.open_pixel(d.id) if self.settings.track_opens else None,
        )
