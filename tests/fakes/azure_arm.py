"""A fake Azure (ARM over HTTPS + per-node instance metadata and token servers) on 127.0.0.1 only.

The real SDK clients (``NetworkManagementClient`` / ``ComputeManagementClient`` with
``base_url=arm_url, connection_verify=ca_path``) and azure-identity's ``ManagedIdentityCredential``
(with ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` pointing at a node's ``FakeImds``) talk to it over real
HTTP. JSON shapes follow the SDK models (camelCase under ``properties``); nothing here imports the
daemon, so the fake checks the client.

ARM (``FakeArm``, HTTPS with a throw-away CA from tests/fakes/azure_tls.py):

- Every request needs ``Authorization: Bearer <token>`` with a token the fake issued (a FakeImds token
  endpoint, or ``issue_token()``) for the ARM audience, not expired; else 401 (``AuthenticationFailed``
  header missing, ``InvalidAuthenticationToken``, ``ExpiredAuthenticationToken``,
  ``InvalidAuthenticationTokenAudience``). Every resource request needs ``api-version`` (any value,
  recorded; else 400 ``MissingApiVersionParameter``). Errors are ``{"error": {"code", "message"}}``.
- Routes (provider/type segments and names case-insensitive, as ARM): NIC GET/PUT and list
  (``Microsoft.Network/networkInterfaces``), VNet and subnet GET, VM GET
  (``Microsoft.Compute/virtualMachines``), VMSS VM GET/PUT and list, VMSS VM NIC list/GET (served by
  the network RP under the compute path), ``/asyncops/<id>`` (operation status).
- State: one subscription, resource groups, VNets/subnets (Azure keeps the first four addresses and the
  last of every subnet), NICs, VMs and VMSS (Uniform) instances. Addresses: lowest free, unique per
  subnet. A VMSS Uniform NIC is named after its NIC configuration (the same name on every instance), so
  look it up by ARM id (``vm.nics[i]``) once a scale set has two instances.
- NIC PUT: the whole NIC is sent (the SDK drops read-only fields; read-only fields sent by hand are
  accepted and ignored). Checks, in order: an async write in progress (429, below), ``If-Match``
  (412 ``PreconditionFailed``; ``*`` or absent
  passes; ``If-None-Match: *`` fails on an existing NIC), names unique (``DuplicateResourceName``),
  exactly one primary ipconfig and the current primary kept (``InvalidPrimaryIpConfiguration``), every
  subnet exists (``InvalidResourceReference``) and all in one subnet
  (``IpConfigurationsOnSameNicCannotUseDifferentSubnets``, VMSS: ``VMScaleSet...``), at most 256
  ipconfigs per NIC and 256 private IPs per VM (``QuotaExceeded``), Static addresses inside the subnet
  (``PrivateIPAddressNotInSubnet``), not reserved (``PrivateIPAddressInReservedRange``), not held by
  another ipconfig (``PrivateIPAddressIsAllocated``), room for the Dynamic ones (``SubnetIsFull``).
  A failed write changes nothing. Removed ipconfigs free their addresses first; a kept ipconfig keeps
  its address. ``etag`` is ``W/"<uuid>"``, new on every write (ipconfig etags equal the NIC's). A PUT
  to a NIC that does not exist is a 404 (the fake creates no NICs); a PUT of a VMSS Uniform NIC (on
  its compute path, or on ``networkInterfaces/<its name>``) is 400 ``OperationNotAllowed`` (the code is
  this fake's choice: ARM's message "The operation 'write' on resource type
  'virtualMachineScaleSets/virtualMachines/networkInterfaces' is disallowed." is known, its code was not
  found).
- VMSS VM PUT (``virtual_machine_scale_set_vms.begin_update``): ``properties.networkProfileConfiguration``
  is applied to the instance's NICs (NIC configuration name = NIC name, ipconfig name = ipconfig
  name; VMSS ipconfigs are always Dynamic), with the checks above, atomically across NICs. Adding or
  removing a NIC configuration is 400 ``InvalidParameter``. A body without networkProfileConfiguration
  changes no NIC. Compute etags are ``"<n>"``.
- Completion (knob ``async_polls``, default 0): 0 answers 200 with the final body
  (provisioningState ``Succeeded``). n > 0: NIC PUT answers 201, VMSS VM PUT 200 (the SDK accepts
  only 200/202 there), provisioningState ``Updating``, headers ``Azure-AsyncOperation:
  https://127.0.0.1:PORT/asyncops/<id>`` and ``Retry-After`` (knob ``retry_after``, default "0");
  new ipconfigs have no privateIPAddress yet (the address is reserved) and IMDS does not list them.
  The status URL answers ``{"status": "InProgress"}`` n times, then completes the write and answers
  ``{"status": "Succeeded"}``. Meanwhile another PUT of the same NIC / instance gets 429
  ``RetryableErrorDueToAnotherOperation`` with ``Retry-After: 1``.

Knobs: ``fail(method, path_contains, status, *, code=None, message=None, headers=None, times=1,
apply_first=False)`` (the next ``times`` matching requests get that error; ``apply_first`` handles the
request first, then answers the error; status 0 drops the connection unanswered), ``delay`` (seconds
before every request), ``write_delay`` (seconds before handling every PUT), ``hold_writes()`` (context
manager: PUTs wait, before any check, until it exits or ``release_writes()``; ``held_writes`` /
``wait_for_held(n)``), ``external_write(nic, mutate)`` (an out-of-band writer: ``mutate`` edits the
NIC JSON in place or returns a new one; applied like a PUT, new etag), ``issue_token()``,
``revoke_tokens()``, ``async_polls``, ``retry_after``.

Inspection: ``requests`` ((method, path, status, api_version) per request), ``calls`` (``ArmCall``
with headers and parsed body), ``writes`` (PUTs that changed state), ``external_writes``,
``nic(name_or_id)`` (the JSON ARM would return), ``ips_of(nic)`` (secondary addresses),
``subnet_used(subnet)``, ``subnet_id(subnet)``, ``primary_ip(vm)``, ``count(method, path_contains)``,
``instance_metadata(vm)``, ``errors`` (exceptions inside the fake: a test should find it empty).

Model: ``add_vnet(name, cidrs, subnets)`` (after ``reset()`` VNet "vnet" 10.224.0.0/16 with subnet
"nodes" 10.224.0.0/24 exists), ``add_subnet(vnet, name, cidr)``, ``add_resource_group(name)``,
``add_vm(name, *, nics=1, subnet="nodes", vm_size=...)``, ``add_vmss_instance(vmss, instance_id, *,
nics=1, subnet="nodes")``; NICs ``<vm>-nic<i>`` (VMSS: ``<vmss>-nic<i>``) with one primary Dynamic
ipconfig "ipconfig1"; the first NIC is the VM's primary. ``subnet`` may be a list, one subnet per NIC:
as in Azure, every NIC of a VM must be in the same VNet (``ValueError`` otherwise), while each NIC
keeps all its ipconfigs in its own subnet (the NIC PUT check above).

Instance metadata (``imds_for(vm) -> FakeImds``, plain HTTP like the real one): every request needs
``Metadata: true`` (else 400). ``/metadata/instance[/compute|/network|/...]?api-version=`` (any
version; missing: 400; ``format=text`` for leaves) reads the live ARM state. Token:
``/metadata/identity/oauth2/token?api-version=2018-02-01&resource=...`` (``client_id``, ``object_id``,
``msi_res_id`` recorded) answers as IMDS does (string numbers). Knobs: ``token_ttl``,
``token_fail(status, times=1)``, ``fail_next(n, status)``, ``delay``; ``token_requests`` and
``requests`` record what was asked.

Fixtures: ``azure_tls`` (session: the certificate files), ``azure_cloud`` (a fresh ``FakeArm``).
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import json
import secrets
import socket
import socketserver
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from tests.fakes.azure_tls import TlsFiles, make_tls_files, shared_tls_files
from tests.fakes.http_handler import FakeHandler

SUBSCRIPTION = "5f0c7d3e-8a41-4b2f-9c6e-1d2a3b4c5e6f"
TENANT = "72f988bf-0000-4000-8000-00000000c0de"
RESOURCE_GROUP = "rg-nodes"
LOCATION = "eastus"
ARM_RESOURCE = "https://management.azure.com"
ARM_AUDIENCES = ("https://management.azure.com", "https://management.core.windows.net")
MAX_IPCONFIGS_PER_NIC = 256
MAX_PRIVATE_IPS_PER_VM = 256
DEFAULT_VM_SIZE = "Standard_D4s_v3"
DEFAULT_TOKEN_TTL = 86399  # what IMDS hands out (about a day)
IMDS_NEWEST_VERSIONS = ["2025-04-07", "2024-07-17", "2023-11-15"]

# NIC and ipconfig properties that are read-only (the fake computes them; sent values are ignored).
_NIC_COMPUTED = {
    "ipConfigurations",
    "provisioningState",
    "resourceGuid",
    "macAddress",
    "primary",
    "virtualMachine",
    "vnetEncryptionSupported",
    "defaultOutboundConnectivityEnabled",
    "hostedWorkloads",
    "tapConfigurations",
    "dscpConfiguration",
    "privateEndpoint",
}
_IPCONFIG_COMPUTED = {
    "privateIPAddress",
    "privateIPAllocationMethod",
    "privateIPAddressVersion",
    "primary",
    "subnet",
    "provisioningState",
    "privateLinkConnectionProperties",
}


class ArmError(Exception):
    """An ARM error answer; raised inside the fake (and by ``external_write`` on a refused change)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass
class ArmCall:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int = 0


@dataclass
class Vm:
    """A VM or a VMSS (Uniform) instance. ``nics`` are NIC ARM ids, the primary first."""

    name: str
    resource_group: str
    id: str
    vm_id: str
    vm_size: str
    location: str
    nics: list[str] = field(default_factory=list)
    vmss: str = ""
    instance_id: str = ""
    etag: str = '"1"'
    state: str = "Succeeded"

    @property
    def is_vmss(self) -> bool:
        return bool(self.vmss)


@dataclass
class _Subnet:
    vnet: str
    name: str
    resource_group: str
    network: ipaddress.IPv4Network
    subscription: str
    used: dict[str, str] = field(default_factory=dict)  # address -> owner ipconfig id
    etag: str = ""

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers/"
            f"Microsoft.Network/virtualNetworks/{self.vnet}/subnets/{self.name}"
        )

    @property
    def first(self) -> int:
        return int(self.network.network_address) + 4

    @property
    def last(self) -> int:
        return int(self.network.broadcast_address) - 1

    @property
    def capacity(self) -> int:
        return self.last - self.first + 1

    def reserved(self, address: str) -> bool:
        value = int(ipaddress.IPv4Address(address))
        return not self.first <= value <= self.last

    def free(self) -> Iterator[str]:
        """Free addresses, lowest first."""
        for value in range(self.first, self.last + 1):
            address = str(ipaddress.IPv4Address(value))
            if address not in self.used:
                yield address


@dataclass
class _Vnet:
    name: str
    resource_group: str
    cidrs: list[ipaddress.IPv4Network]
    subnets: dict[str, _Subnet]
    etag: str
    guid: str


@dataclass
class _IpConfig:
    name: str
    subnet: _Subnet
    address: str
    method: str = "Dynamic"
    primary: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    pending: bool = False  # async write not completed: address reserved, not shown


@dataclass
class _Nic:
    name: str
    resource_group: str
    id: str
    vm: Vm
    primary: bool
    mac: str
    etag: str
    ipconfigs: list[_IpConfig] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] | None = None
    guid: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: str = "Succeeded"

    @property
    def vmss(self) -> bool:
        return self.vm.is_vmss

    def ipconfig_id(self, name: str) -> str:
        return f"{self.id}/ipConfigurations/{name}"


@dataclass
class _Rule:
    method: str
    path_contains: str
    status: int
    code: str
    message: str
    headers: dict[str, str]
    times: int
    apply_first: bool


@dataclass
class _AsyncOp:
    id: str
    remaining: int
    busy_keys: list[str]
    nics: list[_Nic]
    vm: Vm | None
    done: bool = False


@dataclass
class _Token:
    resource: str
    expires_on: float
    client_id: str


_DEFAULT_CODES = {
    400: "BadRequest",
    401: "AuthenticationFailed",
    403: "AuthorizationFailed",
    404: "ResourceNotFound",
    409: "Conflict",
    412: "PreconditionFailed",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def _new_etag() -> str:
    return f'W/"{uuid.uuid4()}"'


def _low(value: str) -> str:
    return value.lower()


class FakeArm:
    """ARM for one subscription; see the module docstring for routes, knobs and error codes."""

    def __init__(
        self,
        *,
        tls: TlsFiles | None = None,
        subscription: str = SUBSCRIPTION,
        resource_group: str = RESOURCE_GROUP,
        location: str = LOCATION,
    ) -> None:
        self.tls = tls or shared_tls_files()
        self.subscription = subscription
        self.resource_group = resource_group
        self.location = location
        self.async_polls = 0
        self.retry_after = "0"
        self.delay = 0.0
        self.write_delay = 0.0
        self._lock = threading.RLock()
        self._writes_open = threading.Event()
        self._writes_open.set()
        self._held = 0
        self._held_cond = threading.Condition()
        self._stopping = False
        self._tokens: dict[str, _Token] = {}
        self._imds: list[FakeImds] = []
        self.reset()
        self._server = _TlsServer(("127.0.0.1", 0), _ArmHandler, self.tls)
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), name="fake-arm", daemon=True
        )

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def arm_url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def ca_path(self) -> str:
        return self.tls.ca_path

    def start(self) -> FakeArm:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._writes_open.set()
        for imds in list(self._imds):
            imds.stop()
        self._imds.clear()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        """Forget every resource, knob and record; the default VNet "vnet"/"nodes" exists again."""
        with self._lock:
            self._rgs: dict[str, str] = {}
            self._vnets: dict[tuple[str, str], _Vnet] = {}
            self._nics: dict[str, _Nic] = {}  # lower-case ARM id -> NIC
            self._vms: dict[str, Vm] = {}  # lower-case ARM id -> VM
            self._ops: dict[str, _AsyncOp] = {}
            self._busy: dict[str, str] = {}  # lower-case ARM id -> async op id
            self._rules: list[_Rule] = []
            self._mac_counter = 0
            self.requests: list[tuple[str, str, int, str | None]] = []
            self.calls: list[ArmCall] = []
            self.errors: list[BaseException] = []
            self.writes = 0
            self.external_writes = 0
            self.async_polls = 0
            self.retry_after = "0"
            self.delay = 0.0
            self.write_delay = 0.0
            self.add_resource_group(self.resource_group)
            self.add_vnet("vnet", ["10.224.0.0/16"], {"nodes": "10.224.0.0/24"})

    def client_env(self, imds: FakeImds) -> dict[str, str]:
        """The environment a daemon subprocess needs to use this fake as its cloud."""
        return {
            "AZURE_ARM_ENDPOINT": self.arm_url,
            "AZURE_IMDS_ENDPOINT": imds.url,
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": imds.url,
            "AZURE_ARM_CA_BUNDLE": self.ca_path,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    # -- model builders -----------------------------------------------------------------------

    def add_resource_group(self, name: str) -> None:
        with self._lock:
            self._rgs.setdefault(_low(name), name)

    def add_vnet(
        self, name: str, cidrs: list[str], subnets: dict[str, str], *, resource_group: str | None = None
    ) -> None:
        rg = self._rg_name(resource_group or self.resource_group)
        spaces = [ipaddress.IPv4Network(c) for c in cidrs]
        made: dict[str, _Subnet] = {}
        for sub_name, cidr in subnets.items():
            net = ipaddress.IPv4Network(cidr)
            if net.prefixlen > 29:
                raise ValueError(f"subnet {sub_name} {cidr}: Azure subnets are /29 or larger")
            if not any(net.subnet_of(space) for space in spaces):
                raise ValueError(f"subnet {sub_name} {cidr} is outside the VNet's address space {cidrs}")
            for other in made.values():
                if net.overlaps(other.network):
                    raise ValueError(f"subnet {sub_name} {cidr} overlaps {other.name} {other.network}")
            made[_low(sub_name)] = _Subnet(
                vnet=name,
                name=sub_name,
                resource_group=rg,
                network=net,
                subscription=self.subscription,
                etag=_new_etag(),
            )
        with self._lock:
            self._vnets[(_low(rg), _low(name))] = _Vnet(
                name=name,
                resource_group=rg,
                cidrs=spaces,
                subnets=made,
                etag=_new_etag(),
                guid=str(uuid.uuid4()),
            )

    def add_subnet(self, vnet: str, name: str, cidr: str, *, resource_group: str | None = None) -> None:
        """Add subnet ``name`` to an existing VNet (inside its address space, overlapping none)."""
        rg = self._rg_name(resource_group or self.resource_group)
        net = ipaddress.IPv4Network(cidr)
        with self._lock:
            found = self._vnets.get((_low(rg), _low(vnet)))
            if found is None:
                raise KeyError(f"VNet {vnet} in {rg}")
            if net.prefixlen > 29 or not any(net.subnet_of(space) for space in found.cidrs):
                raise ValueError(f"subnet {name} {cidr}: /29 or larger, inside {found.cidrs}")
            if _low(name) in found.subnets or any(net.overlaps(s.network) for s in found.subnets.values()):
                raise ValueError(f"subnet {name} {cidr} exists or overlaps another subnet of {vnet}")
            found.subnets[_low(name)] = _Subnet(
                vnet=found.name,
                name=name,
                resource_group=found.resource_group,
                network=net,
                subscription=self.subscription,
                etag=_new_etag(),
            )
            found.etag = _new_etag()

    def add_vm(
        self,
        name: str,
        *,
        nics: int = 1,
        subnet: str | list[str] = "nodes",
        vm_size: str = DEFAULT_VM_SIZE,
        resource_group: str | None = None,
    ) -> Vm:
        rg = self._rg_name(resource_group or self.resource_group)
        vm_id = (
            f"/subscriptions/{self.subscription}/resourceGroups/{rg}/providers/Microsoft.Compute/"
            f"virtualMachines/{name}"
        )
        vm = Vm(
            name=name,
            resource_group=rg,
            id=vm_id,
            vm_id=str(uuid.uuid4()),
            vm_size=vm_size,
            location=self.location,
        )
        nic_base = (
            f"/subscriptions/{self.subscription}/resourceGroups/{rg}/providers/Microsoft.Network/"
            "networkInterfaces/"
        )
        return self._add_machine(
            vm, [(f"{name}-nic{i}", nic_base + f"{name}-nic{i}") for i in range(nics)], subnet
        )

    def add_vmss_instance(
        self,
        vmss: str,
        instance_id: int | str,
        *,
        nics: int = 1,
        subnet: str | list[str] = "nodes",
        vm_size: str = DEFAULT_VM_SIZE,
        resource_group: str | None = None,
    ) -> Vm:
        rg = self._rg_name(resource_group or self.resource_group)
        iid = str(instance_id)
        vm_id = (
            f"/subscriptions/{self.subscription}/resourceGroups/{rg}/providers/Microsoft.Compute/"
            f"virtualMachineScaleSets/{vmss}/virtualMachines/{iid}"
        )
        vm = Vm(
            name=f"{vmss}_{iid}",
            resource_group=rg,
            id=vm_id,
            vm_id=str(uuid.uuid4()),
            vm_size=vm_size,
            location=self.location,
            vmss=vmss,
            instance_id=iid,
        )
        names = [f"{vmss}-nic{i}" for i in range(nics)]
        return self._add_machine(vm, [(n, f"{vm_id}/networkInterfaces/{n}") for n in names], subnet)

    def _add_machine(self, vm: Vm, nics: list[tuple[str, str]], subnet_ref: str | list[str]) -> Vm:
        refs = [subnet_ref] * len(nics) if isinstance(subnet_ref, str) else list(subnet_ref)
        if len(refs) != len(nics):
            raise ValueError(f"{len(refs)} subnets for {len(nics)} NICs")
        with self._lock:
            if _low(vm.id) in self._vms:
                raise ValueError(f"{vm.id} exists")
            subnets = [self._subnet(ref) for ref in refs]
            if len({(_low(s.resource_group), _low(s.vnet)) for s in subnets}) > 1:
                raise ValueError(f"{vm.id}: every NIC of a VM must be in the same VNet, got {refs}")
            for i, (nic_name, nic_id) in enumerate(nics):
                subnet = subnets[i]
                self._mac_counter += 1
                n = self._mac_counter
                mac = f"00-0D-3A-{(n >> 16) & 0xFF:02X}-{(n >> 8) & 0xFF:02X}-{n & 0xFF:02X}"
                nic = _Nic(
                    name=nic_name,
                    resource_group=vm.resource_group,
                    id=nic_id,
                    vm=vm,
                    primary=i == 0,
                    mac=mac,
                    etag=_new_etag(),
                )
                address = next(subnet.free(), None)
                if address is None:
                    raise ValueError(f"subnet {subnet.name} is full")
                subnet.used[address] = nic.ipconfig_id("ipconfig1")
                nic.ipconfigs.append(
                    _IpConfig(name="ipconfig1", subnet=subnet, address=address, primary=True)
                )
                self._nics[_low(nic_id)] = nic
                vm.nics.append(nic_id)
            self._vms[_low(vm.id)] = vm
            return vm

    def imds_for(self, vm: Vm) -> FakeImds:
        """A running instance metadata + token server for ``vm`` (stopped with the fake)."""
        imds = FakeImds(self, vm).start()
        with self._lock:
            self._imds.append(imds)
        return imds

    # -- knobs --------------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path_contains: str,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        apply_first: bool = False,
    ) -> None:
        """The next ``times`` requests with ``method`` ("*": any) whose path contains ``path_contains``
        (case-insensitive) get ``status``; ``apply_first``: handled first, then answered so; 0: the
        connection is dropped unanswered."""
        with self._lock:
            self._rules.append(
                _Rule(
                    method=method.upper(),
                    path_contains=path_contains.lower(),
                    status=status,
                    code=code or _DEFAULT_CODES.get(status, "InjectedFailure"),
                    message=message or f"fake ARM: injected {status}",
                    headers=dict(headers or {}),
                    times=times,
                    apply_first=apply_first,
                )
            )

    @contextlib.contextmanager
    def hold_writes(self) -> Iterator[None]:
        """PUTs wait (before any check) while inside; ``release_writes()`` lets them go early."""
        self._writes_open.clear()
        try:
            yield
        finally:
            self._writes_open.set()

    def release_writes(self) -> None:
        self._writes_open.set()

    @property
    def held_writes(self) -> int:
        with self._held_cond:
            return self._held

    def wait_for_held(self, n: int = 1, timeout: float = 5.0) -> None:
        with self._held_cond:
            if not self._held_cond.wait_for(lambda: self._held >= n, timeout):
                raise TimeoutError(f"{self._held} PUTs held, wanted {n}")

    def issue_token(
        self, resource: str = ARM_RESOURCE, ttl: float = DEFAULT_TOKEN_TTL, client_id: str = ""
    ) -> str:
        token = "fake-arm." + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = _Token(resource=resource, expires_on=time.time() + ttl, client_id=client_id)
        return token

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def external_write(
        self, nic: str, mutate: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any]:
        """Change a NIC out of band, as another writer would: ``mutate`` gets the NIC JSON (edit it in
        place or return a new one); it is applied like a PUT (raises ArmError if refused)."""
        with self._lock:
            target = self._find_nic(nic)
            body = self._render_nic(target)
            result = mutate(body)
            if result is not None:
                body = result
            props = body.get("properties") or {}
            with self._transaction():
                self._apply_nic(target, props.get("ipConfigurations"), props, body.get("tags"), async_=False)
            target.etag = _new_etag()
            self.external_writes += 1
            return self._render_nic(target)

    # -- inspection ---------------------------------------------------------------------------

    def nic(self, name_or_id: str) -> dict[str, Any]:
        with self._lock:
            return self._render_nic(self._find_nic(name_or_id))

    def ips_of(self, nic: str) -> list[str]:
        """The NIC's secondary addresses (ipconfig order), as a GET shows them."""
        with self._lock:
            target = self._find_nic(nic)
            return [ic.address for ic in target.ipconfigs if not ic.primary and not ic.pending]

    def primary_ip(self, vm: Vm) -> str:
        with self._lock:
            nic = self._nics[_low(vm.nics[0])]
            return next(ic.address for ic in nic.ipconfigs if ic.primary)

    def subnet_used(self, subnet: str) -> list[str]:
        """Every address held in the subnet (reserved addresses excluded), ascending."""
        with self._lock:
            found = self._subnet(subnet)
            return sorted(found.used, key=lambda a: int(ipaddress.IPv4Address(a)))

    def subnet_id(self, subnet: str = "nodes") -> str:
        with self._lock:
            return self._subnet(subnet).id

    def count(self, method: str, path_contains: str = "") -> int:
        with self._lock:
            return sum(
                1 for m, p, _, _ in self.requests if m == method and path_contains.lower() in p.lower()
            )

    # -- lookups ------------------------------------------------------------------------------

    def _rg_name(self, name: str) -> str:
        with self._lock:
            if _low(name) not in self._rgs:
                self._rgs[_low(name)] = name
            return self._rgs[_low(name)]

    def _subnet(self, ref: str) -> _Subnet:
        if ref.lower().startswith("/subscriptions/"):
            parts = ref.strip("/").split("/")
            shape = [p.lower() for p in parts[::2]]
            if shape == ["subscriptions", "resourcegroups", "providers", "virtualnetworks", "subnets"] and (
                parts[1].lower() == self.subscription.lower() and parts[5].lower() == "microsoft.network"
            ):
                vnet = self._vnets.get((parts[3].lower(), parts[7].lower()))
                if vnet and parts[8].lower() == "subnets" and parts[9].lower() in vnet.subnets:
                    return vnet.subnets[parts[9].lower()]
            raise KeyError(ref)
        if "/" in ref:
            vnet_name, sub_name = ref.split("/", 1)
            for vnet in self._vnets.values():
                if vnet.name.lower() == vnet_name.lower() and sub_name.lower() in vnet.subnets:
                    return vnet.subnets[sub_name.lower()]
            raise KeyError(ref)
        found = [v.subnets[ref.lower()] for v in self._vnets.values() if ref.lower() in v.subnets]
        if len(found) != 1:
            raise KeyError(f"subnet {ref!r}: {len(found)} matches (use 'vnet/subnet' or the id)")
        return found[0]

    def _find_nic(self, name_or_id: str) -> _Nic:
        if name_or_id.startswith("/"):
            return self._nics[_low(name_or_id)]
        found = [n for n in self._nics.values() if _low(n.name) == _low(name_or_id)]
        plain = [n for n in found if not n.vmss]
        if len(plain) == 1:
            return plain[0]
        if len(found) == 1:
            return found[0]
        raise KeyError(f"NIC {name_or_id!r}: {len(found)} matches (use the ARM id, e.g. vm.nics[0])")

    # -- rendering ----------------------------------------------------------------------------

    def _render_ipconfig(self, nic: _Nic, ic: _IpConfig) -> dict[str, Any]:
        props: dict[str, Any] = {}
        if not ic.pending:
            props["privateIPAddress"] = ic.address
        props.update(
            {
                "privateIPAllocationMethod": ic.method,
                "privateIPAddressVersion": "IPv4",
                "primary": ic.primary,
                "provisioningState": "Updating" if ic.pending else "Succeeded",
                "subnet": {"id": ic.subnet.id},
            }
        )
        props.update(copy.deepcopy(ic.extra))
        return {
            "name": ic.name,
            "id": nic.ipconfig_id(ic.name),
            "etag": nic.etag,
            "type": "Microsoft.Network/networkInterfaces/ipConfigurations",
            "properties": props,
        }

    def _render_nic(self, nic: _Nic) -> dict[str, Any]:
        props: dict[str, Any] = {
            "provisioningState": nic.state,
            "resourceGuid": nic.guid,
            "ipConfigurations": [self._render_ipconfig(nic, ic) for ic in nic.ipconfigs],
            "dnsSettings": {"dnsServers": [], "appliedDnsServers": []},
            "macAddress": nic.mac,
            "enableAcceleratedNetworking": False,
            "vnetEncryptionSupported": False,
            "enableIPForwarding": False,
            "disableTcpStateTracking": False,
            "hostedWorkloads": [],
            "tapConfigurations": [],
            "primary": nic.primary,
            "virtualMachine": {"id": nic.vm.id},
            "nicType": "Standard",
            "auxiliaryMode": "None",
            "auxiliarySku": "None",
        }
        props.update(copy.deepcopy(nic.extra))
        body: dict[str, Any] = {
            "name": nic.name,
            "id": nic.id,
            "etag": nic.etag,
            "type": "Microsoft.Network/networkInterfaces",
            "location": nic.vm.location,
            "kind": "Regular",
            "properties": props,
        }
        if nic.tags:
            body["tags"] = copy.deepcopy(nic.tags)
        return body

    def _render_subnet(self, subnet: _Subnet) -> dict[str, Any]:
        return {
            "name": subnet.name,
            "id": subnet.id,
            "etag": subnet.etag,
            "type": "Microsoft.Network/virtualNetworks/subnets",
            "properties": {
                "provisioningState": "Succeeded",
                "addressPrefix": str(subnet.network),
                "ipConfigurations": [{"id": owner} for owner in sorted(subnet.used.values())],
                "delegations": [],
                "privateEndpointNetworkPolicies": "Disabled",
                "privateLinkServiceNetworkPolicies": "Enabled",
            },
        }

    def _render_vnet(self, vnet: _Vnet) -> dict[str, Any]:
        vnet_id = (
            f"/subscriptions/{self.subscription}/resourceGroups/{vnet.resource_group}/providers/"
            f"Microsoft.Network/virtualNetworks/{vnet.name}"
        )
        return {
            "name": vnet.name,
            "id": vnet_id,
            "etag": vnet.etag,
            "type": "Microsoft.Network/virtualNetworks",
            "location": self.location,
            "properties": {
                "provisioningState": "Succeeded",
                "resourceGuid": vnet.guid,
                "addressSpace": {"addressPrefixes": [str(c) for c in vnet.cidrs]},
                "subnets": [self._render_subnet(s) for s in vnet.subnets.values()],
                "virtualNetworkPeerings": [],
                "enableDdosProtection": False,
            },
        }

    def _vm_nics(self, vm: Vm) -> list[_Nic]:
        return [self._nics[_low(nic_id)] for nic_id in vm.nics]

    def _render_vm(self, vm: Vm) -> dict[str, Any]:
        props: dict[str, Any] = {
            "vmId": vm.vm_id,
            "hardwareProfile": {"vmSize": vm.vm_size},
            "provisioningState": vm.state,
            "storageProfile": {
                "osDisk": {"osType": "Linux", "name": f"{vm.name}_OsDisk_1", "createOption": "FromImage"}
            },
            "osProfile": {"computerName": vm.name, "adminUsername": "azureuser"},
            "networkProfile": {
                "networkInterfaces": [
                    {"id": n.id, "properties": {"primary": n.primary}} for n in self._vm_nics(vm)
                ]
            },
        }
        body: dict[str, Any] = {"name": vm.name, "id": vm.id, "location": vm.location, "properties": props}
        if not vm.is_vmss:
            body["type"] = "Microsoft.Compute/virtualMachines"
            return body
        body.update(
            {
                "name": vm.name,
                "type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
                "instanceId": vm.instance_id,
                "etag": vm.etag,
                "sku": {"name": vm.vm_size, "tier": "Standard"},
            }
        )
        props["latestModelApplied"] = True
        props["osProfile"]["computerName"] = (
            f"{vm.vmss}{int(vm.instance_id):06X}" if vm.instance_id.isdigit() else vm.name
        )
        props["networkProfileConfiguration"] = {
            "networkInterfaceConfigurations": [
                {
                    "name": nic.name,
                    "properties": {
                        "primary": nic.primary,
                        "enableAcceleratedNetworking": False,
                        "enableIPForwarding": False,
                        "dnsSettings": {"dnsServers": []},
                        "ipConfigurations": [
                            {
                                "name": ic.name,
                                "properties": {
                                    "primary": ic.primary,
                                    "privateIPAddressVersion": "IPv4",
                                    "subnet": {"id": ic.subnet.id},
                                },
                            }
                            for ic in nic.ipconfigs
                        ],
                    },
                }
                for nic in self._vm_nics(vm)
            ]
        }
        return body

    # -- writes -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Undo every NIC and subnet change made inside if it raises (a refused write changes nothing)."""
        subnets = [s for v in self._vnets.values() for s in v.subnets.values()]
        used = {id(s): dict(s.used) for s in subnets}
        nics = {
            key: (list(n.ipconfigs), copy.deepcopy(n.extra), copy.deepcopy(n.tags), n.state)
            for key, n in self._nics.items()
        }
        pending = {id(ic): ic.pending for n in self._nics.values() for ic in n.ipconfigs}
        try:
            yield
        except BaseException:
            for s in subnets:
                s.used = used[id(s)]
            for key, (ipconfigs, extra, tags, state) in nics.items():
                n = self._nics[key]
                n.ipconfigs, n.extra, n.tags, n.state = ipconfigs, extra, tags, state
                for ic in ipconfigs:
                    ic.pending = pending.get(id(ic), ic.pending)
            raise

    def _parse_ipconfigs(self, nic: _Nic, raw: Any) -> list[_IpConfig]:
        if not isinstance(raw, list) or not raw:
            raise ArmError(
                400,
                "InvalidRequestFormat",
                f"Network interface {nic.id} must have at least one IP configuration "
                "(properties.ipConfigurations).",
            )
        parsed: list[_IpConfig] = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
                raise ArmError(400, "InvalidRequestFormat", f"ipConfigurations[{i}] needs a name.")
            props = item.get("properties") or {}
            if not isinstance(props, dict):
                raise ArmError(
                    400, "InvalidRequestFormat", f"ipConfigurations[{i}].properties is not an object."
                )
            subnet_ref = (
                (props.get("subnet") or {}).get("id") if isinstance(props.get("subnet"), dict) else None
            )
            if not subnet_ref:
                raise ArmError(
                    400,
                    "InvalidRequestFormat",
                    f"IP configuration {nic.ipconfig_id(item['name'])} must reference a subnet.",
                )
            try:
                subnet = self._subnet(str(subnet_ref))
            except KeyError:
                raise ArmError(
                    400,
                    "InvalidResourceReference",
                    f"Resource {subnet_ref} referenced by resource {nic.id} was not found. Please make sure "
                    "that the referenced resource exists, and that both resources are in the same region.",
                ) from None
            version = props.get("privateIPAddressVersion") or "IPv4"
            if version != "IPv4":
                raise ArmError(
                    400, "InvalidRequestFormat", f"fake ARM: privateIPAddressVersion {version} unsupported"
                )
            method = props.get("privateIPAllocationMethod") or "Dynamic"
            if method not in ("Dynamic", "Static"):
                raise ArmError(
                    400,
                    "InvalidRequestFormat",
                    f"privateIPAllocationMethod {method!r} is not Dynamic or Static.",
                )
            address = props.get("privateIPAddress") or ""
            if address:
                try:
                    ipaddress.IPv4Address(address)
                except ValueError:
                    raise ArmError(
                        400, "InvalidRequestFormat", f"{address!r} is not a valid IPv4 address."
                    ) from None
            extra = {k: copy.deepcopy(v) for k, v in props.items() if k not in _IPCONFIG_COMPUTED}
            parsed.append(
                _IpConfig(
                    name=item["name"],
                    subnet=subnet,
                    address=address,
                    method=method,
                    primary=bool(props.get("primary")),
                    extra=extra,
                )
            )
        return parsed

    def _apply_nic(
        self,
        nic: _Nic,
        raw_ipconfigs: Any,
        props: dict[str, Any] | None,
        tags: Any,
        *,
        async_: bool,
        vmss_body: bool = False,
    ) -> bool:
        """Validate and apply one NIC's new ipconfig list (inside ``_transaction``); True if changed."""
        before = json.dumps(self._render_nic(nic), sort_keys=True)
        new = self._parse_ipconfigs(nic, raw_ipconfigs)
        names = [ic.name.lower() for ic in new]
        for name in names:
            if names.count(name) > 1:
                raise ArmError(
                    400,
                    "DuplicateResourceName",
                    f"Resource {nic.id} has two child resources with the same name ({name}).",
                )
        if len(new) == 1 and not new[0].primary:
            new[0].primary = True
        primaries = [ic for ic in new if ic.primary]
        old_primary = next(ic for ic in nic.ipconfigs if ic.primary)
        if len(primaries) != 1:
            raise ArmError(
                400,
                "InvalidPrimaryIpConfiguration",
                f"Network interface {nic.id} must have exactly one primary IP configuration, "
                f"has {len(primaries)}.",
            )
        if primaries[0].name.lower() != old_primary.name.lower():
            raise ArmError(
                400,
                "InvalidPrimaryIpConfiguration",
                f"The primary IP configuration {old_primary.name} of {nic.id} cannot be removed "
                "or made secondary.",
            )
        if len({id(ic.subnet) for ic in new}) > 1:
            code = "IpConfigurationsOnSameNicCannotUseDifferentSubnets"
            raise ArmError(
                400,
                "VMScaleSet" + code if nic.vmss else code,
                f"IP configurations on the same network interface {nic.id} cannot use different subnets.",
            )
        if len(new) > MAX_IPCONFIGS_PER_NIC:
            raise ArmError(
                400,
                "QuotaExceeded",
                f"Network interface {nic.id} would have {len(new)} IP configurations; the limit is "
                f"{MAX_IPCONFIGS_PER_NIC}.",
            )
        others = sum(len(n.ipconfigs) for n in self._vm_nics(nic.vm) if n is not nic)
        if others + len(new) > MAX_PRIVATE_IPS_PER_VM:
            raise ArmError(
                400,
                "QuotaExceeded",
                f"Virtual machine {nic.vm.id} would have {others + len(new)} private IP addresses; the limit "
                f"is {MAX_PRIVATE_IPS_PER_VM}.",
            )

        old = {ic.name.lower(): ic for ic in nic.ipconfigs}
        kept: dict[str, _IpConfig] = {}
        for ic in new:
            prev = old.get(ic.name.lower())
            if prev is None or prev.subnet is not ic.subnet:
                continue
            if vmss_body or ic.method == "Dynamic" or ic.address in ("", prev.address):
                kept[ic.name.lower()] = prev
        for key, prev in old.items():
            if key not in kept:
                prev.subnet.used.pop(prev.address, None)

        dynamic: list[_IpConfig] = []
        for ic in new:
            owner = nic.ipconfig_id(ic.name)
            prev = kept.get(ic.name.lower())
            if prev is not None:
                ic.address = prev.address
                ic.pending = prev.pending
                if vmss_body:
                    ic.method = prev.method
                continue
            ic.pending = async_
            if vmss_body:
                ic.method, ic.address = "Dynamic", ""
            if ic.method == "Dynamic" or not ic.address:
                dynamic.append(ic)
                continue
            subnet = ic.subnet
            if ipaddress.IPv4Address(ic.address) not in subnet.network:
                raise ArmError(
                    400,
                    "PrivateIPAddressNotInSubnet",
                    f"IP address {ic.address} of {owner} is not in subnet {subnet.id} ({subnet.network}).",
                )
            if subnet.reserved(ic.address):
                raise ArmError(
                    400,
                    "PrivateIPAddressInReservedRange",
                    f"IP address {ic.address} is in the range Azure reserves in subnet {subnet.network}.",
                )
            holder = subnet.used.get(ic.address)
            if holder is not None and holder.lower() != owner.lower():
                raise ArmError(
                    400,
                    "PrivateIPAddressIsAllocated",
                    f"IP configuration {owner} is using the private IP address {ic.address} which is already "
                    f"allocated to resource {holder}.",
                )
            subnet.used[ic.address] = owner
        if dynamic:
            subnet = dynamic[0].subnet
            if subnet.capacity - len(subnet.used) < len(dynamic):
                raise ArmError(
                    400,
                    "SubnetIsFull",
                    f"Subnet {subnet.name} with address prefix {subnet.network} does not have enough "
                    f"capacity for {len(dynamic)} IP addresses.",
                )
            free = subnet.free()
            for ic in dynamic:
                ic.address = next(free)
                subnet.used[ic.address] = nic.ipconfig_id(ic.name)

        nic.ipconfigs = new
        if props is not None and not vmss_body:
            nic.extra = {k: copy.deepcopy(v) for k, v in props.items() if k not in _NIC_COMPUTED}
            nic.tags = copy.deepcopy(tags) if isinstance(tags, dict) else None
        if async_:
            nic.state = "Updating"
        return json.dumps(self._render_nic(nic), sort_keys=True) != before

    def _check_conditions(self, headers: dict[str, str], etag: str, resource_id: str) -> None:
        if_match = headers.get("if-match")
        if if_match is not None and if_match.strip() != "*" and if_match.strip() != etag:
            raise ArmError(
                412,
                "PreconditionFailed",
                f"Precondition failed: the etag {if_match} in the If-Match header does not match the etag "
                f"{etag} of resource {resource_id}.",
            )
        if headers.get("if-none-match", "").strip() == "*":
            raise ArmError(412, "PreconditionFailed", f"Resource {resource_id} exists (If-None-Match: *).")

    def _check_busy(self, keys: list[str], resource_id: str) -> None:
        for key in keys:
            op = self._busy.get(key)
            if op is not None:
                raise ArmError(
                    429,
                    "RetryableErrorDueToAnotherOperation",
                    f"Operation on resource {resource_id} is not allowed because another operation "
                    f"({op}) is in progress on it. Retry later.",
                    {"Retry-After": "1"},
                )

    def _start_async(self, busy_keys: list[str], nics: list[_Nic], vm: Vm | None) -> dict[str, str]:
        op = _AsyncOp(id=str(uuid.uuid4()), remaining=self.async_polls, busy_keys=busy_keys, nics=nics, vm=vm)
        self._ops[op.id] = op
        for key in busy_keys:
            self._busy[key] = op.id
        if vm is not None:
            vm.state = "Updating"
        return {
            "Azure-AsyncOperation": f"{self.arm_url}/asyncops/{op.id}",
            "Retry-After": self.retry_after,
        }

    def _complete(self, op: _AsyncOp) -> None:
        for nic in op.nics:
            for ic in nic.ipconfigs:
                ic.pending = False
            nic.state = "Succeeded"
            nic.etag = _new_etag()
        if op.vm is not None:
            op.vm.state = "Succeeded"
            op.vm.etag = f'"{int(op.vm.etag.strip(chr(34))) + 1}"'
        for key in op.busy_keys:
            if self._busy.get(key) == op.id:
                del self._busy[key]
        op.done = True

    def _wait_for_write_gate(self) -> None:
        if self._writes_open.is_set():
            return
        with self._held_cond:
            self._held += 1
            self._held_cond.notify_all()
        try:
            while not self._writes_open.wait(0.05):
                if self._stopping:
                    break
        finally:
            with self._held_cond:
                self._held -= 1
                self._held_cond.notify_all()

    def _put_nic(
        self, rg: str, name: str, headers: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        self._wait_for_write_gate()
        if self.write_delay:
            time.sleep(self.write_delay)
        if not isinstance(body, dict):
            raise ArmError(400, "InvalidRequestFormat", "Cannot parse the request body as a JSON object.")
        with self._lock:
            nic_id = (
                f"/subscriptions/{self.subscription}/resourceGroups/{self._rgs[rg]}/providers/"
                f"Microsoft.Network/networkInterfaces/{name}"
            )
            nic = self._nics.get(_low(nic_id))
            if nic is None:
                body_id = str(body.get("id") or "")
                vmss_named = any(n.vmss and _low(n.name) == _low(name) for n in self._nics.values())
                if "/virtualmachinescalesets/" in body_id.lower() or vmss_named:
                    raise _vmss_nic_write_refused()
                raise ArmError(
                    404,
                    "ResourceNotFound",
                    f"The Resource 'Microsoft.Network/networkInterfaces/{name}' under resource group "
                    f"'{self._rgs[rg]}' was not found (the fake ARM creates no NICs).",
                )
            self._check_busy([_low(nic.id)], nic.id)
            self._check_conditions(headers, nic.etag, nic.id)
            props = body.get("properties") or {}
            if not isinstance(props, dict):
                raise ArmError(400, "InvalidRequestFormat", "properties is not an object.")
            async_ = self.async_polls > 0
            with self._transaction():
                changed = self._apply_nic(
                    nic, props.get("ipConfigurations"), props, body.get("tags"), async_=async_
                )
            nic.etag = _new_etag()
            if changed:
                self.writes += 1
            if not async_:
                return 200, self._render_nic(nic), {}
            extra = self._start_async([_low(nic.id)], [nic], None)
            return 201, self._render_nic(nic), extra

    def _put_vmss_vm(self, vm: Vm, headers: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        self._wait_for_write_gate()
        if self.write_delay:
            time.sleep(self.write_delay)
        if not isinstance(body, dict):
            raise ArmError(400, "InvalidRequestFormat", "Cannot parse the request body as a JSON object.")
        with self._lock:
            nics = self._vm_nics(vm)
            keys = [_low(vm.id)] + [_low(n.id) for n in nics]
            self._check_busy(keys, vm.id)
            self._check_conditions(headers, vm.etag, vm.id)
            props = body.get("properties") or {}
            npc = props.get("networkProfileConfiguration") if isinstance(props, dict) else None
            async_ = self.async_polls > 0
            changed = False
            if npc is not None:
                configs = npc.get("networkInterfaceConfigurations") if isinstance(npc, dict) else None
                if not isinstance(configs, list):
                    raise ArmError(
                        400,
                        "InvalidParameter",
                        "networkProfileConfiguration.networkInterfaceConfigurations is required.",
                    )
                by_name = {}
                for cfg in configs:
                    cfg_name = cfg.get("name") if isinstance(cfg, dict) else None
                    if not isinstance(cfg_name, str):
                        raise ArmError(
                            400, "InvalidParameter", "Every network interface configuration needs a name."
                        )
                    by_name[_low(cfg_name)] = cfg
                have = {_low(n.name) for n in nics}
                if set(by_name) != have:
                    raise ArmError(
                        400,
                        "InvalidParameter",
                        f"Network interface configurations {sorted(by_name)} do not match the instance's "
                        f"network interfaces {sorted(have)} (the fake does not add or remove NICs).",
                    )
                with self._transaction():
                    for nic in nics:
                        cfg_props = by_name[_low(nic.name)].get("properties") or {}
                        raw = cfg_props.get("ipConfigurations")
                        as_nic = [
                            {
                                "name": ic.get("name"),
                                "properties": {
                                    "subnet": (ic.get("properties") or {}).get("subnet"),
                                    "primary": (ic.get("properties") or {}).get("primary"),
                                    "privateIPAddressVersion": (ic.get("properties") or {}).get(
                                        "privateIPAddressVersion"
                                    ),
                                },
                            }
                            if isinstance(ic, dict)
                            else ic
                            for ic in (raw if isinstance(raw, list) else [])
                        ]
                        changed |= self._apply_nic(
                            nic, as_nic or raw, None, None, async_=async_, vmss_body=True
                        )
                for nic in nics:
                    nic.etag = _new_etag()
            if changed:
                self.writes += 1
            if not async_:
                vm.etag = f'"{int(vm.etag.strip(chr(34))) + 1}"'
                return 200, self._render_vm(vm), {}
            extra = self._start_async(keys, nics, vm)
            return 200, self._render_vm(vm), extra

    # -- serving ------------------------------------------------------------------------------

    def handle(self, handler: _ArmHandler, method: str) -> None:
        split = urlsplit(handler.path)
        path = split.path
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        if self.delay:
            time.sleep(self.delay)
        rule = self._take_rule(method, path)
        status: int
        payload: Any
        extra: dict[str, str]
        if rule is not None and not rule.apply_first:
            status, payload, extra = (
                rule.status,
                {"error": {"code": rule.code, "message": rule.message}},
                rule.headers,
            )
        else:
            try:
                status, payload, extra = self._dispatch(method, path, query, headers, body)
            except ArmError as err:
                status, payload, extra = err.status, err.body(), err.headers
            except Exception as exc:  # a bug in the fake: a 500, and recorded for the test to see
                with self._lock:
                    self.errors.append(exc)
                status, payload, extra = 500, ArmError(500, "InternalServerError", repr(exc)).body(), {}
            if rule is not None:
                status, payload, extra = (
                    rule.status,
                    {"error": {"code": rule.code, "message": rule.message}},
                    rule.headers,
                )
        with self._lock:
            self.requests.append((method, path, status, query.get("api-version")))
            self.calls.append(ArmCall(method, path, query, headers, body, status))
        if status == 0:
            handler.close_connection = True
            return
        data = json.dumps(payload).encode() if payload is not None else b""
        try:
            handler.send_response(status)
            if data:
                handler.send_header("Content-Type", "application/json; charset=utf-8")
            handler.send_header("Content-Length", str(len(data)))
            handler.send_header("x-ms-request-id", str(uuid.uuid4()))
            for name, value in extra.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, OSError):
            handler.close_connection = True

    def _take_rule(self, method: str, path: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.method in ("*", method) and rule.path_contains in path.lower():
                    rule.times -= 1
                    if rule.times <= 0:
                        self._rules.remove(rule)
                    return rule
        return None

    def _authorize(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization")
        if not auth:
            raise ArmError(
                401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
            )
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is provided in an invalid format.",
            )
        with self._lock:
            info = self._tokens.get(token.strip())
        if info is None:
            raise ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.")
        if info.expires_on <= time.time():
            raise ArmError(401, "ExpiredAuthenticationToken", "The access token expiry UTC time has passed.")
        if info.resource.rstrip("/") not in ARM_AUDIENCES:
            raise ArmError(
                401,
                "InvalidAuthenticationTokenAudience",
                f"The access token has been obtained for wrong audience or resource '{info.resource}'.",
            )

    def _dispatch(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        low = [p.lower() for p in parts]
        self._authorize(headers)
        if len(low) == 2 and low[0] == "asyncops":
            if method != "GET":
                raise _method_not_allowed(method)
            return self._async_status(parts[1])
        if not query.get("api-version"):
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if len(low) < 2 or low[0] != "subscriptions":
            raise ArmError(404, "InvalidResourceType", f"The resource type for {path} could not be found.")
        if low[1] != self.subscription.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{parts[1]}' could not be found.")
        if len(low) < 4 or low[2] != "resourcegroups":
            raise ArmError(404, "InvalidResourceType", f"The resource type for {path} could not be found.")
        rg = low[3]
        with self._lock:
            if rg not in self._rgs:
                raise ArmError(
                    404, "ResourceGroupNotFound", f"Resource group '{parts[3]}' could not be found."
                )
        if len(low) < 7 or low[4] != "providers":
            raise ArmError(404, "InvalidResourceType", f"The resource type for {path} could not be found.")
        provider, rest, lrest = low[5], parts[6:], low[6:]
        if provider == "microsoft.network":
            return self._network(method, rg, rest, lrest, headers=headers, body=body)
        if provider == "microsoft.compute":
            return self._compute(method, rg, rest, lrest, headers=headers, body=body)
        raise ArmError(404, "InvalidResourceType", f"The resource type for {path} could not be found.")

    def _not_found(self, rg: str, rtype: str, name: str) -> ArmError:
        return ArmError(
            404,
            "ResourceNotFound",
            f"The Resource '{rtype}/{name}' under resource group '{self._rgs.get(rg, rg)}' was not found.",
        )

    def _network(
        self, method: str, rg: str, rest: list[str], lrest: list[str], *, headers: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if lrest == ["networkinterfaces"]:
            if method != "GET":
                raise _method_not_allowed(method)
            with self._lock:
                found = [
                    self._render_nic(n)
                    for n in self._nics.values()
                    if not n.vmss and _low(n.resource_group) == rg
                ]
            return 200, {"value": found}, {}
        if len(lrest) == 2 and lrest[0] == "networkinterfaces":
            if method == "PUT":
                return self._put_nic(rg, rest[1], headers, body)
            if method != "GET":
                raise _method_not_allowed(method)
            with self._lock:
                nic_id = (
                    f"/subscriptions/{self.subscription}/resourceGroups/{self._rgs[rg]}/providers/"
                    f"Microsoft.Network/networkInterfaces/{rest[1]}"
                )
                nic = self._nics.get(_low(nic_id))
                if nic is None:
                    raise self._not_found(rg, "Microsoft.Network/networkInterfaces", rest[1])
                return 200, self._render_nic(nic), {}
        if len(lrest) in (2, 4) and lrest[0] == "virtualnetworks":
            if method != "GET":
                raise _method_not_allowed(method)
            with self._lock:
                vnet = self._vnets.get((rg, lrest[1]))
                if vnet is None:
                    raise self._not_found(rg, "Microsoft.Network/virtualNetworks", rest[1])
                if len(lrest) == 2:
                    return 200, self._render_vnet(vnet), {}
                if lrest[2] != "subnets":
                    raise ArmError(404, "InvalidResourceType", "The resource type could not be found.")
                subnet = vnet.subnets.get(lrest[3])
                if subnet is None:
                    raise self._not_found(
                        rg, f"Microsoft.Network/virtualNetworks/{vnet.name}/subnets", rest[3]
                    )
                return 200, self._render_subnet(subnet), {}
        raise ArmError(
            404, "InvalidResourceType", "The resource type could not be found in Microsoft.Network."
        )

    def _compute(
        self, method: str, rg: str, rest: list[str], lrest: list[str], *, headers: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        sub_rg = (
            f"/subscriptions/{self.subscription}/resourceGroups/{self._rgs[rg]}/providers/Microsoft.Compute"
        )
        if len(lrest) == 2 and lrest[0] == "virtualmachines":
            if method != "GET":
                raise _method_not_allowed(method)
            with self._lock:
                vm = self._vms.get(_low(f"{sub_rg}/virtualMachines/{rest[1]}"))
                if vm is None:
                    raise self._not_found(rg, "Microsoft.Compute/virtualMachines", rest[1])
                return 200, self._render_vm(vm), {}
        if len(lrest) >= 3 and lrest[0] == "virtualmachinescalesets" and lrest[2] == "virtualmachines":
            vmss = rest[1]
            if len(lrest) == 3:
                if method != "GET":
                    raise _method_not_allowed(method)
                with self._lock:
                    found = [
                        self._render_vm(v)
                        for v in self._vms.values()
                        if _low(v.vmss) == _low(vmss) and _low(v.resource_group) == rg
                    ]
                    if not found:
                        raise self._not_found(rg, "Microsoft.Compute/virtualMachineScaleSets", vmss)
                return 200, {"value": found}, {}
            with self._lock:
                vm = self._vms.get(_low(f"{sub_rg}/virtualMachineScaleSets/{vmss}/virtualMachines/{rest[3]}"))
            if vm is None:
                raise self._not_found(
                    rg, f"Microsoft.Compute/virtualMachineScaleSets/{vmss}/virtualMachines", rest[3]
                )
            if len(lrest) == 4:
                if method == "PUT":
                    return self._put_vmss_vm(vm, headers, body)
                if method != "GET":
                    raise _method_not_allowed(method)
                with self._lock:
                    return 200, self._render_vm(vm), {}
            if lrest[4] == "networkinterfaces" and len(lrest) in (5, 6):
                if method == "PUT" and len(lrest) == 6:
                    raise _vmss_nic_write_refused()
                if method != "GET":
                    raise _method_not_allowed(method)
                with self._lock:
                    nics = self._vm_nics(vm)
                    if len(lrest) == 5:
                        return 200, {"value": [self._render_nic(n) for n in nics]}, {}
                    nic = next((n for n in nics if _low(n.name) == lrest[5]), None)
                    if nic is None:
                        raise self._not_found(rg, "Microsoft.Network/networkInterfaces", rest[5])
                    return 200, self._render_nic(nic), {}
        raise ArmError(
            404, "InvalidResourceType", "The resource type could not be found in Microsoft.Compute."
        )

    def _async_status(self, op_id: str) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            op = self._ops.get(op_id)
            if op is None:
                raise ArmError(404, "NotFound", f"Operation {op_id} was not found.")
            headers = {"Retry-After": self.retry_after}
            if op.done:
                return 200, {"status": "Succeeded", "name": op.id}, headers
            if op.remaining > 0:
                op.remaining -= 1
                return 200, {"status": "InProgress", "name": op.id}, headers
            self._complete(op)
            return 200, {"status": "Succeeded", "name": op.id}, headers

    # -- instance metadata --------------------------------------------------------------------

    def instance_metadata(self, vm: Vm) -> dict[str, Any]:
        """What IMDS shows for ``vm`` now (pending async addresses left out)."""
        with self._lock:
            compute = {
                "azEnvironment": "AzurePublicCloud",
                "location": vm.location,
                "name": vm.name,
                "offer": "",
                "osType": "Linux",
                "provider": "Microsoft.Compute",
                "resourceGroupName": vm.resource_group,
                "resourceId": vm.id,
                "subscriptionId": self.subscription,
                "tags": "",
                "vmId": vm.vm_id,
                "vmScaleSetName": vm.vmss,
                "vmSize": vm.vm_size,
                "zone": "",
            }
            interfaces = []
            for nic in self._vm_nics(vm):
                ordered = sorted(nic.ipconfigs, key=lambda ic: not ic.primary)
                primary = ordered[0]
                interfaces.append(
                    {
                        "ipv4": {
                            "ipAddress": [
                                {"privateIpAddress": ic.address, "publicIpAddress": ""}
                                for ic in ordered
                                if not ic.pending
                            ],
                            "subnet": [
                                {
                                    "address": str(primary.subnet.network.network_address),
                                    "prefix": str(primary.subnet.network.prefixlen),
                                }
                            ],
                        },
                        "ipv6": {"ipAddress": []},
                        "macAddress": nic.mac.replace("-", "").upper(),
                    }
                )
            return {"compute": compute, "network": {"interface": interfaces}}


def _vmss_nic_write_refused() -> ArmError:
    return ArmError(
        400,
        "OperationNotAllowed",
        "The operation 'write' on resource type 'virtualMachineScaleSets/virtualMachines/networkInterfaces' "
        "is disallowed. Change a VMSS instance's NICs through the instance's networkProfileConfiguration.",
    )


def _method_not_allowed(method: str) -> ArmError:
    return ArmError(405, "MethodNotAllowed", f"The method {method} is not allowed on this resource.")


class _LoopbackServer(ThreadingHTTPServer):
    """ThreadingHTTPServer without the reverse lookup of its own address (no resolver traffic)."""

    daemon_threads = True

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _TlsServer(_LoopbackServer):
    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], tls: TlsFiles
    ) -> None:
        super().__init__(address, handler)
        self.ssl_context = tls.server_context()

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        # The handshake happens on the handler thread's first read, so a stuck client blocks no one.
        return self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: clients that hang up (or fail the handshake) are part of the tests."""


class _ArmHandler(FakeHandler):
    timeout = 60


class FakeImds:
    """Instance metadata and managed-identity tokens for one VM (plain HTTP on 127.0.0.1)."""

    def __init__(self, arm: FakeArm, vm: Vm) -> None:
        self.arm = arm
        self.vm = vm
        self.token_ttl = DEFAULT_TOKEN_TTL
        self.client_id = str(uuid.uuid4())
        self.delay = 0.0
        self.token_requests: list[dict[str, str]] = []
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._token_failures: deque[int] = deque()
        self._failures: deque[int] = deque()
        self._server = _LoopbackServer(("127.0.0.1", 0), _ImdsHandler)
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), name="fake-azure-imds", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeImds:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def token_fail(self, status: int, times: int = 1) -> None:
        """The next ``times`` token requests get ``status`` (0: the connection is dropped)."""
        with self._lock:
            self._token_failures.extend([status] * times)

    def fail_next(self, n: int, status: int = 500) -> None:
        """The next ``n`` requests of any kind get ``status`` (0: the connection is dropped)."""
        with self._lock:
            self._failures.extend([status] * n)

    def handle(self, handler: _ImdsHandler, method: str) -> None:
        split = urlsplit(handler.path)
        path = split.path.rstrip("/")
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            handler.rfile.read(length)
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        content_type = "application/json; charset=utf-8"
        if failure is not None:
            status, payload = failure, json.dumps({"error": "fake IMDS: injected failure"})
        else:
            try:
                status, payload, content_type = self._respond(method, path, query, handler)
            except Exception as exc:  # a bug in the fake
                self.arm.errors.append(exc)
                status, payload = 500, json.dumps({"error": repr(exc)})
        with self._lock:
            self.requests.append((method, path, status))
        if status == 0:
            handler.close_connection = True
            return
        data = payload.encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def _respond(
        self, method: str, path: str, query: dict[str, str], handler: _ImdsHandler
    ) -> tuple[int, str, str]:
        json_type = "application/json; charset=utf-8"
        if (handler.headers.get("Metadata") or "").lower() != "true":
            return (
                400,
                json.dumps({"error": "Bad request. Required metadata header not specified"}),
                json_type,
            )
        if method != "GET":
            return 405, json.dumps({"error": "Method not allowed"}), json_type
        if path == "/metadata/identity/oauth2/token":
            return self._token(query)
        if path != "/metadata/instance" and not path.startswith("/metadata/instance/"):
            return 404, json.dumps({"error": "Not found"}), json_type
        if not query.get("api-version"):
            return (
                400,
                json.dumps(
                    {
                        "error": "Bad request. api-version was not specified in the request. For more "
                        "information refer to aka.ms/azureimds",
                        "newest-versions": IMDS_NEWEST_VERSIONS,
                    }
                ),
                json_type,
            )
        node: Any = self.arm.instance_metadata(self.vm)
        for segment in path[len("/metadata/instance") :].strip("/").split("/"):
            if not segment:
                continue
            if isinstance(node, dict) and segment in node:
                node = node[segment]
            elif isinstance(node, list) and segment.isdigit() and int(segment) < len(node):
                node = node[int(segment)]
            else:
                return 404, json.dumps({"error": "Not found"}), json_type
        if query.get("format") == "text":
            if isinstance(node, dict | list):
                return 400, json.dumps({"error": "Bad request. format=text is for leaf values"}), json_type
            return 200, str(node), "text/plain; charset=utf-8"
        return 200, json.dumps(node), json_type

    def _token(self, query: dict[str, str]) -> tuple[int, str, str]:
        json_type = "application/json; charset=utf-8"
        with self._lock:
            self.token_requests.append(dict(query))
            failure = self._token_failures.popleft() if self._token_failures else None
        if failure is not None:
            return (
                failure,
                json.dumps({"error": "unknown_error", "error_description": f"fake IMDS: injected {failure}"}),
                json_type,
            )
        if not query.get("api-version"):
            return (
                400,
                json.dumps({"error": "invalid_request", "error_description": "api-version missing"}),
                json_type,
            )
        resource = query.get("resource")
        if not resource:
            return (
                400,
                json.dumps(
                    {
                        "error": "invalid_request",
                        "error_description": "Required query variable 'resource' is missing",
                    }
                ),
                json_type,
            )
        now = int(time.time())
        ttl = int(self.token_ttl)
        token = self.arm.issue_token(resource, ttl, query.get("client_id") or self.client_id)
        return (
            200,
            json.dumps(
                {
                    "access_token": token,
                    "client_id": query.get("client_id") or self.client_id,
                    "expires_in": str(ttl),
                    "expires_on": str(now + ttl),
                    "ext_expires_in": str(ttl),
                    "not_before": str(now),
                    "resource": resource,
                    "token_type": "Bearer",
                }
            ),
            json_type,
        )


class _ImdsHandler(FakeHandler):
    """Every method to the fake's ``handle``."""


@pytest.fixture(scope="session")
def azure_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA and a 127.0.0.1/localhost server certificate, made once per test session."""
    return make_tls_files(tmp_path_factory.mktemp("azure-tls"))


@pytest.fixture
def azure_cloud(azure_tls: TlsFiles) -> Iterator[FakeArm]:
    """A fresh fake ARM (with the default VNet) for this test; every server stops at teardown."""
    arm = FakeArm(tls=azure_tls).start()
    try:
        yield arm
    finally:
        arm.stop()


# --- a guard for tests that drive the SDK in this process ---------------------------------------

_FOREIGN_ENV = (
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_AUTHORITY_HOST",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)


@pytest.fixture
def azure_loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in _FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = ipaddress.ip_address(address[0])
            assert host.is_loopback, f"test tried to connect to non-loopback {address!r}"
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield
