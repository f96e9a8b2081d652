"""Token issuers' keys in the cluster settings (hybrid modern authentication).

Gateways verify Bearer tokens offline against the keys the settings carry
(``seg_contract.BearerIssuer``), so the keys reach every node signed with the policy and
keep working while the identity provider or the cloud is unreachable. The control plane
keeps them current:

- ``save_settings``: when an admin saves settings, the keys of every issuer with a
  ``jwks_uri`` are fetched first; an issuer whose keys cannot be fetched fails the save
  with the reason (the admin is there to fix the URI), so no settings version ever
  carries an issuer without keys by accident;
- ``refresh_issuer_keys``: on a schedule, every cluster's issuers are fetched again; a
  cluster whose keys changed (the provider rolled its keys) gets a new settings version,
  pushed like any other change; one that did not change, or whose provider cannot be
  reached, is left as it is (its nodes keep the keys they hold).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from lambdas.domain.errors import InvalidInput, JwksUnavailable
from lambdas.domain.jwks import JwksError, signing_keys
from lambdas.domain.policy_commit import Proposal
from lambdas.ports import JwksSource
from lambdas.usecases.cluster_lookup import require_cluster
from lambdas.usecases.policy_changes import change_settings
from lambdas.usecases.policy_versions import VersionStores, write_version
from seg_contract import BearerIssuer, ClusterSettings

logger = logging.getLogger(__name__)


def _check_uri(uri: str) -> None:
    parts = urlsplit(uri)
    if parts.scheme != "https" or not parts.hostname:
        raise JwksError(f"jwks_uri {uri[:200]!r} must be an https:// URL")


def _fresh(issuer: BearerIssuer, source: JwksSource, now: datetime) -> BearerIssuer:
    if not issuer.jwks_uri:
        return issuer  # keys given inline by the admin
    _check_uri(issuer.jwks_uri)
    keys = signing_keys(source.fetch(issuer.jwks_uri))
    if keys == issuer.keys:
        return issuer
    return issuer.model_copy(update={"keys": keys, "keys_fetched_at": now})


def with_fresh_keys(
    settings: ClusterSettings, source: JwksSource, now: datetime
) -> ClusterSettings:
    """``settings`` with every issuer's keys fetched from its ``jwks_uri``. Raises
    ``InvalidInput`` naming the issuer whose keys are unusable or unreachable, and for an
    issuer that ends up with no key at all."""
    issuers = []
    for issuer in settings.bearer_issuers:
        try:
            fresh = _fresh(issuer, source, now)
        except (JwksError, JwksUnavailable) as exc:
            raise InvalidInput(f"issuer {issuer.issuer!r}: {exc}") from None
        if not fresh.keys:
            raise InvalidInput(
                f"issuer {issuer.issuer!r} has no keys: give its jwks_uri or its keys"
            )
        issuers.append(fresh)
    return settings.model_copy(update={"bearer_issuers": tuple(issuers)})


def save_settings(
    cluster_id: str,
    settings: ClusterSettings,
    *,
    stores: VersionStores,
    source: JwksSource,
    now: datetime,
) -> int:
    """Fetch the issuers' keys, then commit the settings as the next version and push
    them; return the version."""
    settings = with_fresh_keys(settings, source, now)
    return change_settings(cluster_id, settings, stores=stores, now=now).version


@dataclass
class RefreshReport:
    clusters: int = 0  # clusters with at least one issuer to fetch
    changed: list[str] = field(default_factory=list)  # clusters given a new version
    failed: list[str] = field(default_factory=list)  # "cluster issuer: reason"


def _with_keys(
    settings: ClusterSettings, fetched: dict[tuple[str, str], BearerIssuer]
) -> ClusterSettings:
    """``settings`` whose issuers take the keys fetched for their (issuer, jwks_uri)."""
    issuers = tuple(fetched.get((i.issuer, i.jwks_uri), i) for i in settings.bearer_issuers)
    return settings.model_copy(update={"bearer_issuers": issuers})


def _keys_proposal(
    cluster_id: str, fetched: dict[tuple[str, str], BearerIssuer], stores: VersionStores
) -> Callable[[int], Proposal]:
    def propose(_version: int) -> Proposal:
        # Read after the version was taken: an admin's save in between is kept, only the
        # fetched keys are put into it.
        current = require_cluster(stores.clusters, cluster_id).settings
        return Proposal(settings=_with_keys(current, fetched))

    return propose


def refresh_issuer_keys(
    *, stores: VersionStores, source: JwksSource, now: datetime
) -> RefreshReport:
    """Fetch every cluster's issuer keys again; commit and push the clusters whose keys
    changed. An unreachable provider keeps the cluster's current keys."""
    report = RefreshReport()
    for cluster in stores.clusters.list_clusters():
        issuers = [i for i in cluster.settings.bearer_issuers if i.jwks_uri]
        if not issuers:
            continue
        report.clusters += 1
        fetched: dict[tuple[str, str], BearerIssuer] = {}
        for issuer in issuers:
            try:
                fresh = _fresh(issuer, source, now)
            except (JwksError, JwksUnavailable) as exc:
                report.failed.append(f"{cluster.cluster_id} {issuer.issuer}: {exc}")
                logger.warning(
                    "issuer keys not refreshed: cluster=%s issuer=%s reason=%s",
                    cluster.cluster_id,
                    issuer.issuer,
                    exc,
                )
                continue
            if fresh is not issuer:
                fetched[(issuer.issuer, issuer.jwks_uri)] = fresh
        if not fetched:
            continue

        write_version(
            cluster.cluster_id,
            _keys_proposal(cluster.cluster_id, fetched, stores),
            stores=stores,
            now=now,
        )
        report.changed.append(cluster.cluster_id)
    return report
