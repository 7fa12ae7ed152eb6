"""DATAPATH=windows: HCN L2Bridge networks and one endpoint per pod (docs/windows.md).

``documents`` builds HCN's JSON (hcsshim's ``hcn`` structs), ``hcn`` is the protocol the datapath
calls, ``hcn_ctypes`` its computenetwork.dll binding (Windows), ``fake`` the in-package fake HCN
(``HCN_BACKEND=fake``), ``datapath`` the datapath itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ipamd.config import Settings
    from ipamd.datapath.windows.datapath import WindowsDatapath


def make_windows_datapath(
    settings: Settings, *, on_call: Callable[[str, str], None] | None = None
) -> WindowsDatapath:
    """The datapath on the HCN that HCN_BACKEND names."""
    from ipamd.datapath.windows.datapath import WindowsDatapath
    from ipamd.datapath.windows.hcn import Hcn

    hcn: Hcn
    if settings.hcn_backend == "fake":
        from ipamd.datapath.windows.fake import FakeHcn

        hcn = FakeHcn(settings.effective_hcn_fake_state)
    else:
        from ipamd.datapath.windows.hcn_ctypes import ComputeNetwork

        hcn = ComputeNetwork()
    return WindowsDatapath(
        hcn,
        external_snat=settings.external_snat,
        exclude_snat_cidrs=settings.exclude_snat_cidrs,
        cluster_cidrs=settings.cluster_cidrs,
        service_cidrs=settings.service_cidrs,
        call_timeout=settings.hcn_call_timeout,
        trace_path=settings.hcn_trace,
        on_call=on_call,
    )


__all__ = ["make_windows_datapath"]
