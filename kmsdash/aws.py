"""The one place that builds boto3 clients.

Credentials come only from the standard boto3 chain (environment, profile, instance or task
role). A Source with a role_arn is reached through AssumeRole with its ExternalId, using
botocore's refreshing credentials so a long run outlives the one-hour STS session. Nothing is
ever stored. AWS_ENDPOINT_URL (the emulator) is honoured by boto3 itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
from botocore.exceptions import ClientError

from kmsdash import __version__

if TYPE_CHECKING:
    from audits.models import Source

ROLE_SESSION_NAME = "kmsdash"
# Appended to every client's user agent; CloudTrail records it, and ingestion flags kmsdash's own
# calls by it (audits.cloudtrail.OwnCalls).
USER_AGENT_MARK = "kmsdash/"
USER_AGENT = f"{USER_AGENT_MARK}{__version__}"


def client_config(max_attempts: int = 5) -> Config:
    # `standard` retries ThrottlingException and LimitExceededException with capped backoff;
    # total_max_attempts counts the first call (max_attempts would not).
    return Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=5,
        read_timeout=30,
        user_agent_extra=USER_AGENT,
    )


def session_for(source: Source | None = None, *, region: str | None = None) -> boto3.Session:
    """A session with the default credential chain, then AssumeRole into source.role_arn if set.

    `region` is where the AssumeRole call goes (regional STS); without it, the configured region,
    else us-east-1, so that a host with no AWS region configured still works.
    """
    if source is None or not source.role_arn:
        return boto3.Session()
    base = botocore.session.Session()
    base.set_config_variable("region", region or base.get_config_variable("region") or "us-east-1")
    extra_args: dict[str, Any] = {"RoleSessionName": ROLE_SESSION_NAME}
    if source.external_id:
        extra_args["ExternalId"] = source.external_id
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=base.create_client,
        source_credentials=base.get_credentials(),
        role_arn=source.role_arn,
        extra_args=extra_args,
    )
    assumed = botocore.session.Session()
    # botocore's documented extension point for custom credentials is the session's provider
    # chain; a deferred refreshable set assumes the role on first use and again before expiry.
    assumed._credentials = DeferredRefreshableCredentials(refresh_using=fetcher.fetch_credentials, method="assume-role")
    return boto3.Session(botocore_session=assumed)


def error_code(exc: ClientError) -> str:
    """The AWS error code of a failed call ('' when the response has none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def client(service: str, region: str, *, source: Source | None = None, max_attempts: int = 5) -> Any:
    return session_for(source, region=region).client(service, region_name=region, config=client_config(max_attempts))
