"""STARTTLS and SMTP AUTH against a real aiosmtpd server with a self-signed certificate."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from services.notify.email_sender import EmailSender
from services.notify.settings import NotifySettings
from shared.broker import EmbeddedBroker, free_port
from shared.messages import Recipient
from tests.notify.conftest import (
    Inbox,
    NotifyHarness,
    SmtpServer,
    new_account,
    new_email,
    publish,
    request,
)
from tests.support import auth, http_client

USER, PASSWORD = "mailer", "s3cret-pass"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp.crt", directory / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Authenticator:
    """Accepts one login; remembers every attempt."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, str]] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        self.attempts.append((mechanism, data.login.decode()))
        ok = data.login.decode() == USER and data.password.decode() == PASSWORD
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


@pytest.fixture
def tls_smtp(tmp_path: Path) -> Iterator[tuple[SmtpServer, Path, Authenticator]]:
    """A server that requires STARTTLS before anything and AUTH before mail."""
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox, authenticator, port = Inbox(), Authenticator(), free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, inbox), cert, authenticator
    finally:
        controller.stop()


def sender(server: SmtpServer, **extra: Any) -> EmailSender:
    values: dict[str, Any] = {"SMTP_HOST": server.host, "SMTP_PORT": server.port, **extra}
    return EmailSender(NotifySettings(**values))


def message(to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "cs@acme.test", to, "hello"
    msg.set_content("hi")
    return msg


async def test_starttls_and_auth_end_to_end(
    tls_smtp: tuple[SmtpServer, Path, Authenticator], broker: EmbeddedBroker, tmp_path: Path
) -> None:
    server, cert, authenticator = tls_smtp
    harness = NotifyHarness(broker, f"sqlite+aiosqlite:///{tmp_path / 'n.db'}", tmp_path, server)
    account, ada = new_account(), new_email()
    try:
        base = await harness.start(
            SMTP_USERNAME=USER, SMTP_PASSWORD=PASSWORD, SMTP_CA_FILE=str(cert)
        )
        await publish(broker, account, request(to=[Recipient(email=ada)]))
        [got] = await server.inbox.wait_for(ada, 1)
        async with http_client(base_url=base, headers=auth("read")) as client:
            deadline, row = time.monotonic() + 10, {}
            while time.monotonic() < deadline and row.get("status") != "sent":
                items = (await client.get("/v1/deliveries", params={"account_id": account})).json()
                row = items["items"][0] if items["items"] else {}
                await asyncio.sleep(0.05)
    finally:
        await harness.stop()
    assert got.tls and got.login == USER  # upgraded, then authenticated, then mail
    assert authenticator.attempts and all(login == USER for _, login in authenticator.attempts)
    assert row["status"] == "sent" and row["attempts"] == 1
    assert row["provider_response"] and "OK" in row["provider_response"]
    sent_at = dt.datetime.fromisoformat(row["sent_at"])
    assert abs((dt.datetime.now(dt.UTC) - sent_at).total_seconds()) < 30


async def test_misconfiguration_is_permanent_not_retried(
    tls_smtp: tuple[SmtpServer, Path, Authenticator], smtp: SmtpServer
) -> None:
    tls_server, cert, _ = tls_smtp
    ca = {"SMTP_CA_FILE": str(cert)}
    cases = [
        # a wrong password: 535, permanent
        (sender(tls_server, SMTP_USERNAME=USER, SMTP_PASSWORD="wrong", **ca), "SMTP 535"),
        # STARTTLS switched off against a server that requires it: 530
        (sender(tls_server, SMTP_STARTTLS=False, **ca), "SMTP 530"),
        # STARTTLS required by the settings, not offered by the server
        (sender(smtp, SMTP_STARTTLS=True), "STARTTLS extension not supported"),
        # AUTH configured, the server offers none
        (
            sender(smtp, SMTP_USERNAME=USER, SMTP_PASSWORD=PASSWORD),
            "AUTH extension is not supported",
        ),
    ]
    for email_sender, says in cases:
        result = await email_sender.send(message("ada@x.test"), delivery_id="d1")
        assert (result.outcome, says in result.detail) == ("permanent", True), result
    # an untrusted certificate is not silently accepted
    untrusted = await sender(tls_server).send(message("ada@x.test"), delivery_id="d2")
    assert untrusted.outcome == "temporary" and "CERTIFICATE_VERIFY_FAILED" in untrusted.detail
    assert tls_server.inbox.messages == [] and smtp.inbox.messages == []


def test_implicit_tls_port_with_starttls_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="SMTP_PORT=465 is implicit TLS"):
        NotifySettings(SMTP_HOST="mail.acme.test", SMTP_PORT=465, SMTP_STARTTLS=True)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="SMTP_USERNAME and SMTP_PASSWORD"):
        NotifySettings(SMTP_USERNAME="u")  # type: ignore[call-arg]
    ok = NotifySettings(SMTP_HOST="mail.acme.test", SMTP_PORT=465)  # type: ignore[call-arg]
    assert ok.smtp_port == 465 and ok.smtp_starttls is None
