"""Send one Slack message: ``chat.postMessage`` with a bot token, an incoming webhook, or a
JSON file in the dev outbox when neither is configured.

Requests only ever go to ``SLACK_API_BASE`` or Slack's own webhook host: a recipient's
``slack_channel`` may be a webhook URL, but any other URL is refused, never fetched.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import httpx
import orjson

from services.notify.email_sender import write_outbox_file
from services.notify.rendering import RenderedSlack
from services.notify.retry import SendResult, classify_http, classify_slack_api
from services.notify.settings import NotifySettings, webhook_allowed

METADATA_EVENT = "uptake_delivery"


def _redacted(result: SendResult, url: str) -> SendResult:
    """A webhook URL is a credential: never in a delivery's detail, log or event."""
    if url not in result.detail and url not in (result.provider_response or ""):
        return result
    return replace(
        result,
        detail=result.detail.replace(url, "<webhook>"),
        provider_response=(result.provider_response or "").replace(url, "<webhook>") or None,
    )


class SlackSender:
    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings
        self._client = httpx.AsyncClient(
            timeout=settings.slack_timeout_seconds, follow_redirects=False
        )

    async def close(self) -> None:
        await self._client.aclose()

    def target(self, channel: str | None) -> tuple[str, str]:
        """(mode, destination): 'webhook' + URL, 'api' + channel, or 'outbox' + channel."""
        s = self.settings
        if channel and channel.startswith(("http://", "https://")):
            return "webhook", channel
        if s.slack_bot_token:
            return "api", channel or s.slack_default_channel
        if s.slack_webhook_url:
            return "webhook", s.slack_webhook_url
        return "outbox", channel or s.slack_default_channel

    async def send(
        self,
        message: RenderedSlack,
        *,
        channel: str | None,
        delivery_id: str,
        resumed: bool = False,
    ) -> SendResult:
        mode, destination = self.target(channel)
        body: dict[str, Any] = {"text": message.text, "blocks": message.blocks}
        if mode == "outbox":
            payload = orjson.dumps({"channel": destination, **body}, option=orjson.OPT_INDENT_2)
            path = await asyncio.to_thread(
                write_outbox_file, self.settings.outbox_dir, f"{delivery_id}.slack.json", payload
            )
            return SendResult.sent(f"outbox:{path.name}")
        if mode == "webhook":
            if not webhook_allowed(destination, self.settings.slack_api_base):
                return SendResult.permanent("webhook URL is not a Slack host; refused")
            result = await self._post(destination, body, headers={})
            return _redacted(result, destination)
        headers = {"Authorization": f"Bearer {self.settings.slack_bot_token}"}
        if resumed and await self._already_posted(destination, delivery_id, headers):
            return SendResult.sent("already posted before a restart (found by its metadata)")
        url = f"{self.settings.slack_api_base}/chat.postMessage"
        metadata = {"event_type": METADATA_EVENT, "event_payload": {"delivery_id": delivery_id}}
        return await self._post(
            url, {"channel": destination, **body, "metadata": metadata}, headers=headers, api=True
        )

    async def _already_posted(
        self, channel: str, delivery_id: str, headers: dict[str, str]
    ) -> bool:
        """Slack has no idempotency key; a message carries its delivery id as metadata, so a
        send cut short by a crash is looked up in the channel's recent history before it is
        posted again. Any failure to look (scope, network) falls back to posting again."""
        try:
            response = await self._client.get(
                f"{self.settings.slack_api_base}/conversations.history",
                params={"channel": channel, "limit": 100, "include_all_metadata": "true"},
                headers=headers,
            )
            answer = response.json()
        except (httpx.HTTPError, ValueError):
            return False
        if not isinstance(answer, dict) or not answer.get("ok"):
            return False
        for msg in answer.get("messages") or []:
            meta = (msg.get("metadata") or {}) if isinstance(msg, dict) else {}
            if (meta.get("event_payload") or {}).get("delivery_id") == delivery_id:
                return True
        return False

    async def _post(
        self, url: str, body: dict[str, Any], *, headers: dict[str, str], api: bool = False
    ) -> SendResult:
        try:
            response = await self._client.post(
                url,
                content=orjson.dumps(body),
                headers={"Content-Type": "application/json; charset=utf-8", **headers},
            )
        except httpx.HTTPError as exc:
            return SendResult.temporary(f"Slack connection: {type(exc).__name__}: {exc}")
        result = classify_http(
            response.status_code,
            retry_after=response.headers.get("retry-after"),
            body=response.text,
        )
        if result.outcome != "sent" or not api:
            return result
        try:
            return classify_slack_api(response.json())
        except ValueError:
            return SendResult.temporary("Slack answered a non-JSON body")
