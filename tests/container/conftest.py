"""The container tier: the gateway as on-prem admins run it (the image, a two-node site
behind HAProxy, the deployment files).

The image is built once per session with the project's own scripts, on the
Debian-package base (``scripts/build-base-image.sh``, cached in ~/.cache/seg/containers
between runs). Where podman cannot run, the tests that need it are skipped with the
reason, and the session summary repeats it: the tier is never skipped silently.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.container.podman import Podman, PodmanError, probe, unique

_TIER: dict[str, object] = {}
_PREFIX = "tests/container/"


def pytest_runtest_logstart(nodeid: str) -> None:
    if nodeid.startswith(_PREFIX):
        _TIER.setdefault("start", time.monotonic())


def pytest_runtest_logfinish(nodeid: str) -> None:
    if nodeid.startswith(_PREFIX):
        _TIER["end"] = time.monotonic()


@pytest.fixture(scope="session")
def podman() -> Podman:
    found = probe()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture(scope="session")
def gateway_image(podman: Podman) -> Iterator[str]:
    """The gateway image, built from this checkout on the Debian-package base."""
    # Build layers older than a week that no image uses any more: keeps the cache bounded.
    podman.run("image", "prune", "--force", "--filter", "until=168h", check=False)
    start = time.monotonic()
    base = podman.script("build-base-image.sh")
    podman.timings["base image"] = time.monotonic() - start
    tag = f"localhost/seg-gateway:{unique('test')}"
    start = time.monotonic()
    try:
        podman.script("build-image.sh", tag)
    except PodmanError as exc:
        pytest.fail(f"the image does not build: {exc}")
    podman.timings["image build"] = time.monotonic() - start
    _TIER["podman"] = podman
    _TIER["base"] = base
    try:
        yield tag
    finally:
        podman.run("rmi", tag, check=False)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    start, end = _TIER.get("start"), _TIER.get("end")
    if not isinstance(start, float) or not isinstance(end, float):
        return
    write = terminalreporter.write_line
    terminalreporter.section("container tier")
    write(f"run time {end - start:.0f} s (tests/container: set-up, tests, tear-down)")
    # Never silent: every reason a test of the tier was skipped for, once each.
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        if report.nodeid.startswith(_PREFIX) and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
            reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in reasons.items():
        write(f"SKIPPED {count} test(s): {reason}")
    podman = _TIER.get("podman")
    if isinstance(podman, Podman):
        for name, seconds in podman.timings.items():
            write(f"  {name}: {seconds:.1f} s")
        write(f"  base: {_TIER.get('base')}")
