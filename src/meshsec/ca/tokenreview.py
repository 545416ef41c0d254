"""Kubernetes TokenReview: the path a real cluster uses to check service-account tokens.

The CA creates a ``TokenReview`` (``authentication.k8s.io/v1``) with ``spec.token`` and
``spec.audiences = TOKEN_AUDIENCES`` through the official ``kubernetes`` client built from a
kubeconfig, and accepts the result only if (Istio's checks and wording): ``status.error`` is
empty, ``status.authenticated`` is true, the user's groups contain ``system:serviceaccounts`` and
the username is ``system:serviceaccount:<ns>:<sa>``. The client is blocking, so each review runs
in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import urllib3.exceptions
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from meshsec.ca.authn import SA_GROUP, AuthFailure, ServiceAccount, parse_service_account_subject
from meshsec.config.errors import ConfigError

log = logging.getLogger(__name__)

POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"


class TokenReviewUnavailable(AuthFailure):
    """The cluster's API server could not be asked (down, unreachable, 5xx): fail closed."""


def load_kube_api_client(kubeconfig: Path) -> Any:
    """An ApiClient for the kubeconfig's current context (ConfigError naming the file)."""
    try:
        return k8s_config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        raise ConfigError([f"kubeconfig {kubeconfig}: {exc}"]) from None


class TokenReviewVerifier:
    """A :class:`meshsec.ca.authn.TokenVerifier` backed by a cluster's TokenReview API."""

    def __init__(self, api_client: Any, *, audiences: Sequence[str], timeout: float = 10.0) -> None:
        self._api = k8s_client.AuthenticationV1Api(api_client)
        self._audiences = list(audiences)
        self._timeout = timeout

    async def verify_token(self, token: str, *, now: datetime) -> ServiceAccount:
        return await asyncio.to_thread(self.review, token)

    def review(self, token: str) -> ServiceAccount:
        body = k8s_client.V1TokenReview(
            api_version="authentication.k8s.io/v1",
            kind="TokenReview",
            spec=k8s_client.V1TokenReviewSpec(token=token, audiences=self._audiences),
        )
        try:
            result = self._api.create_token_review(body, _request_timeout=self._timeout)
        except ApiException as exc:
            failure = TokenReviewUnavailable if not exc.status or exc.status >= 500 else AuthFailure
            raise failure(f"failed to create the token review: {exc.status} {exc.reason}") from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise TokenReviewUnavailable(f"failed to create the token review: {exc}") from None
        return parse_token_review_status(result.status)


def parse_token_review_status(status: Any) -> ServiceAccount:
    """Istio's ``getTokenReviewResult`` checks on a ``V1TokenReviewStatus``."""
    if status is None:
        raise AuthFailure("the token is not authenticated")
    if status.error:
        raise AuthFailure(f"the service account authentication returns an error: {status.error}")
    if not status.authenticated:
        raise AuthFailure("the token is not authenticated")
    user = status.user
    groups = list(user.groups or []) if user is not None else []
    if SA_GROUP not in groups:
        raise AuthFailure("the token is not a service account")
    username = user.username if user is not None else None
    if not isinstance(username, str) or len(username.split(":")) != 4:
        raise AuthFailure("invalid username field in the token review result")
    account = parse_service_account_subject(username)
    extra = (user.extra or {}) if user is not None else {}
    pod_names = extra.get(POD_NAME_EXTRA) or []
    pod_uids = extra.get(POD_UID_EXTRA) or []
    return ServiceAccount(
        account.namespace,
        account.name,
        pod_names[0] if pod_names else None,
        pod_uids[0] if pod_uids else None,
    )
