"""The local runtime's outbox: every e-mail the handlers sent through SES (moto plays
SES here), written as a plain-text file per message so an admin trying ``seg up`` can
read the notices users would get.

moto keeps sent messages in its SES backend, in the process that runs moto; a thread of
that process copies new ones to ``<directory>/<nnnn>.txt``. ``read_mailbox`` reads them
back (the demo and tests)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from seg_local.aws_events import REGION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mail:
    sender: str
    to: str
    subject: str
    body: str
    path: Path


def _render(message: object) -> str:
    destinations = getattr(message, "destinations", {}) or {}
    to = ", ".join(destinations.get("ToAddresses", []))
    return (
        f"From: {getattr(message, 'source', '')}\n"
        f"To: {to}\n"
        f"Subject: {getattr(message, 'subject', '')}\n\n"
        f"{getattr(message, 'body', '')}\n"
    )


class Mailbox:
    def __init__(self, directory: Path, interval_s: float = 0.5) -> None:
        self.directory = directory
        self._interval_s = interval_s
        self._written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mailbox", daemon=True)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self.flush()

    def flush(self) -> int:
        """Write the messages sent since the last call; returns how many."""
        sent = list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)
        new = sent[self._written :]
        for message in new:
            self._written += 1
            path = self.directory / f"{self._written:04d}.txt"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(_render(message))
            tmp.replace(path)
        return len(new)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.flush()
            except Exception:
                log.exception("copying sent e-mails to %s failed", self.directory)


def read_mailbox(directory: Path) -> list[Mail]:
    """The messages written so far, oldest first."""
    mails: list[Mail] = []
    for path in sorted(directory.glob("*.txt")):
        head, _, body = path.read_text().partition("\n\n")
        fields = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
        mails.append(
            Mail(
                sender=fields.get("From", ""),
                to=fields.get("To", ""),
                subject=fields.get("Subject", ""),
                body=body.rstrip("\n"),
                path=path,
            )
        )
    return mails
