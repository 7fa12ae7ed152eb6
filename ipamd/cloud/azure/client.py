"""The ARM client (azure-core's ARM pipeline: Microsoft.Network and Microsoft.Compute calls as JSON), the
managed-identity credential, and the one place azure-core exceptions become ``ipamd.errors.CloudError``.

Translation table (first match wins)::

    already a CloudError                                      -> itself
    HTTP 412 (If-Match lost to another writer)                -> EtagMismatch (a TemporaryCloudError)
    HTTP 429, or code RetryableErrorDueToAnotherOperation,
        AnotherOperationInProgress, Conflict with Retry-After -> ThrottledError (retry_after from Retry-After)
    HTTP 408 or 5xx, HTTP 409 (re-read and retry)             -> TemporaryCloudError
    code SubnetIsFull, PrivateIPAddressSpaceExhausted,
        *SubnetFull*                                          -> SubnetFull
    code QuotaExceeded, *LimitExceeded, *LimitReached         -> LimitExceeded
    HTTP 401/403, code AuthorizationFailed,
        LinkedAuthorizationFailed                             -> CloudPermissionError(action=<RBAC action>)
    HTTP 404                                                  -> InterfaceNotFound
    any other HTTP error                                      -> PermanentCloudError
    connection errors, timeouts (ServiceRequestError,
        ServiceResponseError), a token endpoint failing       -> TemporaryCloudError
    no managed identity at all (CredentialUnavailableError)   -> PermanentCloudError

The SDK's own retries are off (``retry_total=0``): every attempt passes through the daemon's one
client-side limiter (``ipamd.cloud.limiter.CloudCaller``), which would not see retries made inside
the SDK pipeline. Resources go in and out as the ARM JSON, so the provider validates exactly what
ARM sent.

Why two resource providers: a standalone VM (or a Flexible scale-set member) owns its NICs, which take
a NIC PUT (Microsoft.Network); a Uniform scale-set instance's NICs belong to the scale set and are
changed by updating the instance's network profile (Microsoft.Compute), the path Cilium's Azure IPAM
takes.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from ipamd.cloud.limiter import retry_after_seconds
from ipamd.errors import (
    CloudError,
    CloudPermissionError,
    InterfaceNotFound,
    LimitExceeded,
    PermanentCloudError,
    SubnetFull,
    TemporaryCloudError,
    ThrottledError,
)

USER_AGENT = "cloud-cni"
# Seconds between LRO polls when ARM sends no Retry-After (the SDK default is 30).
POLLING_INTERVAL = 1.0
_MAX_MESSAGE = 512

BUSY_CODES = frozenset({"RetryableErrorDueToAnotherOperation", "AnotherOperationInProgress"})
SUBNET_FULL_CODES = frozenset({"SubnetIsFull", "PrivateIPAddressSpaceExhausted", "InsufficientSubnetSize"})
PERMISSION_CODES = frozenset({"AuthorizationFailed", "LinkedAuthorizationFailed", "Forbidden"})


class EtagMismatch(TemporaryCloudError):
    """The resource changed between our GET and our PUT (HTTP 412): read it again and redo the change."""


def error_code(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    if code:
        return str(code)
    response = getattr(exc, "response", None)
    try:
        body = response.json() if response is not None else None
    except Exception:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code") or "")
    return ""


def translate(operation: str, exc: Exception, *, action: str = "") -> CloudError:
    """The ``CloudError`` for an exception raised by an ARM call made on behalf of ``operation``.

    ``action`` is the RBAC action the call needs, named in a permission error."""
    if isinstance(exc, CloudError):
        return exc
    if isinstance(exc, HttpResponseError) and getattr(exc, "status_code", None) is not None:
        return _translate_http(operation, exc, action)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return TemporaryCloudError(operation, f"{type(exc).__name__}: {str(exc)[:_MAX_MESSAGE]}")
    if isinstance(exc, ClientAuthenticationError):
        if type(exc).__name__ == "CredentialUnavailableError":
            return PermanentCloudError(operation, f"no managed identity: {str(exc)[:_MAX_MESSAGE]}")
        return TemporaryCloudError(operation, f"token: {str(exc)[:_MAX_MESSAGE]}")
    return PermanentCloudError(operation, f"{type(exc).__name__}: {str(exc)[:_MAX_MESSAGE]}")


def _translate_http(operation: str, exc: HttpResponseError, action: str) -> CloudError:
    status = int(exc.status_code or 0)
    code = error_code(exc)
    message = getattr(getattr(exc, "error", None), "message", None) or exc.reason or ""
    text = f"HTTP {status} {code}: {message}".rstrip(": ")[:_MAX_MESSAGE]
    response = getattr(exc, "response", None)
    retry_after = retry_after_seconds(dict(response.headers)) if response is not None else None
    if status == 412:
        return EtagMismatch(operation, text)
    if status == 429 or code in BUSY_CODES or (status == 409 and retry_after is not None):
        return ThrottledError(operation, text, retry_after=retry_after)
    if status in (408, 409) or status >= 500:
        return TemporaryCloudError(operation, text, retry_after=retry_after)
    if code in SUBNET_FULL_CODES or "SubnetFull" in code:
        return SubnetFull(operation, text)
    if code == "QuotaExceeded" or code.endswith(("LimitExceeded", "LimitReached")):
        return LimitExceeded(operation, text)
    if status in (401, 403) or code in PERMISSION_CODES:
        needs = f" (needs {action})" if action else ""
        return CloudPermissionError(operation, text + needs, action=action)
    if status == 404:
        return InterfaceNotFound(operation, text)
    return PermanentCloudError(operation, text)


@dataclass(frozen=True, slots=True)
class ResourceId:
    """The parts of an ARM resource id the daemon needs."""

    subscription: str
    resource_group: str
    name: str  # the last segment

    @classmethod
    def parse(cls, value: str) -> ResourceId:
        parts = value.strip("/").split("/")
        if len(parts) < 8 or parts[0].lower() != "subscriptions" or parts[2].lower() != "resourcegroups":
            raise PermanentCloudError("azure", f"not an ARM resource id: {value[:200]!r}")
        return cls(parts[1], parts[3], parts[-1])


def make_credential(client_id: str | None, imds_endpoint: str) -> Any:
    """Managed identity (user-assigned when ``client_id``), then DefaultAzureCredential's other sources.

    azure-identity reads the token endpoint from AZURE_POD_IDENTITY_AUTHORITY_HOST, not from an IMDS
    setting: when the operator moved IMDS (AZURE_IMDS_ENDPOINT) and did not set that variable, the
    token endpoint moves with it, so that no request ever goes to the default link-local address.
    """
    if imds_endpoint.rstrip("/") != "http://169.254.169.254":
        os.environ.setdefault("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds_endpoint)
    from azure.identity import ChainedTokenCredential, DefaultAzureCredential, ManagedIdentityCredential

    managed = ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    rest = DefaultAzureCredential(
        exclude_managed_identity_credential=True,
        exclude_interactive_browser_credential=True,
        exclude_visual_studio_code_credential=True,
        exclude_powershell_credential=True,
        exclude_developer_cli_credential=True,
    )
    return ChainedTokenCredential(managed, rest)


# API versions: the ones azure-mgmt-network 33 / azure-mgmt-compute 39 send for these calls.
NETWORK_API = "2026-03-01"
VMSS_NIC_API = "2018-10-01"  # the scale-set VM NIC list is only served by this version
COMPUTE_API = "2026-04-01"
ARM_SCOPE = "https://management.azure.com/.default"


class Arm:
    """The handful of ARM calls the provider makes, as JSON dicts. Blocking; thread-safe.

    Built on azure-core / azure-mgmt-core (``ARMPipelineClient`` with the policies the generated
    management clients use: the ARM bearer-token challenge policy, ARM polling for long-running
    operations) but without azure-mgmt-network's and azure-mgmt-compute's generated clients: those
    load every operation group and model of their API surface (~31 and ~17 MB of memory) for the
    seven calls below, which take and return the ARM JSON the provider validates itself.
    """

    def __init__(
        self,
        credential: Any,
        subscription_id: str,
        *,
        endpoint: str,
        ca_bundle: str | None = None,
        polling_interval: float = POLLING_INTERVAL,
        timeout: float = 30.0,
    ) -> None:
        from azure.core.pipeline import policies
        from azure.mgmt.core import ARMPipelineClient
        from azure.mgmt.core.policies import (
            ARMAutoResourceProviderRegistrationPolicy,
            ARMChallengeAuthenticationPolicy,
            ARMHttpLoggingPolicy,
        )

        config: dict[str, Any] = {
            "connection_verify": ca_bundle or True,
            "retry_total": 0,  # every attempt passes the daemon's own limiter
            "connection_timeout": 5,
            "read_timeout": timeout,
            "user_agent": USER_AGENT,
            "sdk_moniker": "cloud-cni",
        }
        pipeline = [
            policies.RequestIdPolicy(**config),
            policies.HeadersPolicy(**config),
            policies.UserAgentPolicy(**config),
            policies.ProxyPolicy(**config),
            policies.ContentDecodePolicy(**config),
            ARMAutoResourceProviderRegistrationPolicy(),
            policies.RedirectPolicy(**config),
            policies.RetryPolicy(**config),
            ARMChallengeAuthenticationPolicy(credential, ARM_SCOPE),
            policies.NetworkTraceLoggingPolicy(**config),
            ARMHttpLoggingPolicy(**config),
        ]
        self._client: Any = ARMPipelineClient(base_url=endpoint, policies=pipeline, **config)
        self._subscription = subscription_id
        self._polling_interval = polling_interval

    def _path(self, resource_group: str, provider: str, *segments: str) -> str:
        quoted = "/".join(urllib.parse.quote(s, safe="") for s in segments)
        group = urllib.parse.quote(resource_group, safe="")
        return f"/subscriptions/{self._subscription}/resourceGroups/{group}/providers/{provider}/{quoted}"

    def _send(
        self,
        method: str,
        url: str,
        api_version: str | None,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One request through the pipeline; the PipelineResponse of a 2xx, else HttpResponseError."""
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        request = HttpRequest(
            method,
            self._client.format_url(url),
            params={"api-version": api_version} if api_version else None,
            headers={"Accept": "application/json", **(headers or {})},
            json=body,
        )
        pipeline_response = self._client._pipeline.run(request)  # as the generated clients do
        response = pipeline_response.http_response
        if not 200 <= response.status_code < 300:
            raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        return pipeline_response

    def _get(self, url: str, api_version: str | None) -> dict[str, Any]:
        return _as_dict(_json(self._send("GET", url, api_version)))

    def _put(
        self, url: str, api_version: str, body: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any]:
        """A PUT and its long-running operation (Azure-AsyncOperation, then the final GET)."""
        from azure.core.polling import LROPoller
        from azure.mgmt.core.polling.arm_polling import ARMPolling

        initial = self._send("PUT", url, api_version, body=body, headers=headers)
        poller = LROPoller(self._client, initial, _json, ARMPolling(self._polling_interval))
        return _as_dict(poller.result())

    def get_nic(self, nic_id: str) -> dict[str, Any]:
        rid = ResourceId.parse(nic_id)
        return self._get(
            self._path(rid.resource_group, "Microsoft.Network", "networkInterfaces", rid.name), NETWORK_API
        )

    def put_nic(self, nic: dict[str, Any], etag: str) -> dict[str, Any]:
        rid = ResourceId.parse(str(nic["id"]))
        url = self._path(rid.resource_group, "Microsoft.Network", "networkInterfaces", rid.name)
        return self._put(url, NETWORK_API, nic, {"If-Match": etag})

    def get_vm(self, resource_group: str, name: str) -> dict[str, Any]:
        return self._get(
            self._path(resource_group, "Microsoft.Compute", "virtualMachines", name), COMPUTE_API
        )

    def _vmss_vm(self, resource_group: str, scale_set: str, instance_id: str) -> str:
        return self._path(
            resource_group,
            "Microsoft.Compute",
            "virtualMachineScaleSets",
            scale_set,
            "virtualMachines",
            instance_id,
        )

    def get_vmss_vm(self, resource_group: str, scale_set: str, instance_id: str) -> dict[str, Any]:
        return self._get(self._vmss_vm(resource_group, scale_set, instance_id), COMPUTE_API)

    def put_vmss_vm(
        self, resource_group: str, scale_set: str, instance_id: str, vm: dict[str, Any], etag: str
    ) -> dict[str, Any]:
        url = self._vmss_vm(resource_group, scale_set, instance_id)
        return self._put(url, COMPUTE_API, vm, {"If-Match": etag})

    def list_vmss_nics(self, resource_group: str, scale_set: str, instance_id: str) -> list[dict[str, Any]]:
        url: str | None = self._path(
            resource_group,
            "microsoft.Compute",
            "virtualMachineScaleSets",
            scale_set,
            "virtualMachines",
            instance_id,
            "networkInterfaces",
        )
        api: str | None = VMSS_NIC_API
        nics: list[dict[str, Any]] = []
        while url:
            page = self._get(url, api)
            items = page.get("value")
            if not isinstance(items, list):
                raise PermanentCloudError("azure", "ARM answered a NIC list without a value list")
            nics.extend(_as_dict(i) for i in items)
            link = page.get("nextLink")
            url, api = (link, None) if isinstance(link, str) and link else (None, None)  # nextLink has it
        return nics

    def get_subnet(self, subnet_id: str) -> dict[str, Any]:
        parts = subnet_id.strip("/").split("/")
        if len(parts) != 10 or parts[6].lower() != "virtualnetworks" or parts[8].lower() != "subnets":
            raise PermanentCloudError("azure", f"not a subnet id: {subnet_id[:200]!r}")
        url = self._path(parts[3], "Microsoft.Network", "virtualNetworks", parts[7], "subnets", parts[9])
        return self._get(url, NETWORK_API)

    def get_vnet(self, vnet_id: str) -> dict[str, Any]:
        rid = ResourceId.parse(vnet_id)
        return self._get(
            self._path(rid.resource_group, "Microsoft.Network", "virtualNetworks", rid.name), NETWORK_API
        )


def _json(pipeline_response: Any) -> Any:
    try:
        return pipeline_response.http_response.json()
    except ValueError:
        raise PermanentCloudError("azure", "ARM answered a body that is not JSON") from None


def _as_dict(model: Any) -> dict[str, Any]:
    data = model.as_dict() if hasattr(model, "as_dict") else model
    if not isinstance(data, dict):
        raise PermanentCloudError("azure", f"ARM answered {type(data).__name__}, not an object")
    return data


__all__ = ["Arm", "EtagMismatch", "ResourceId", "error_code", "make_credential", "translate"]
