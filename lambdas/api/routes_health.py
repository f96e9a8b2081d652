"""Liveness: no authentication, no backend call (a load balancer or uptime check must
not be able to load DynamoDB)."""

from __future__ import annotations

from fastapi import APIRouter

from lambdas.api.models import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health() -> Health:
    return Health()
