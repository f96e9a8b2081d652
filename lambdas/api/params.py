"""The path parameters the routers share, with their bounds, spelled once. The ports and
use cases a route takes are ``Annotated`` types next to the container
(``lambdas.api.deps``); the callers (``Admin``, ``Gateway``, ``DeviceServices``) are in
``auth``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

ClusterId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
UserPath = Annotated[str, Path(min_length=1, max_length=256)]
DeviceIdPath = Annotated[str, Path(min_length=1, max_length=128)]
MdmDeviceIdPath = Annotated[str, Path(min_length=1, max_length=128)]
