"""One subnet's address space as the cloud hands it out: secondary IPs, /28 prefixes, reserved addresses.

The simulator needs what a real subnet does to a warm pool: it runs out (the cloud answers SubnetFull
and the node pauses growth), and prefixes need whole free /28 blocks, so secondary IPs scattered over
the subnet can leave no room for a prefix while addresses are still free (EC2's
InsufficientCidrBlocks). ``ipamd.cloud.sim.SimCloud`` holds one node; this holds the addresses of
thousands, so it keeps counters and block masks rather than sets of addresses:

- the subnet is cut into /28 blocks. A block is *free*, an *IP block* (holding individual addresses:
  secondary IPs and interfaces' primary addresses) or a *prefix*;
- individual addresses fill the lowest IP block that has room before a new block is opened, so IPs
  stay packed and whole blocks stay available for prefixes; an IP block that empties is free again;
- the cloud's reserved addresses (AWS and Azure alike: the network address, the next three and the
  broadcast address) are never handed out;
- blocks never touched are not materialised: a /8 for capacity planning costs a few arrays.

Values are integers (``int(IPv4Address)``); :func:`ip_text` formats one for the datastore.
"""

from __future__ import annotations

import heapq
import ipaddress
from array import array

__all__ = ["RESERVED_ADDRESSES", "Subnet", "SubnetExhausted", "Usage", "ip_text", "prefix_text"]

BLOCK = 16  # addresses in a /28
_FULL = (1 << BLOCK) - 1
_FREE, _IPS, _PREFIX = 0, 1, 2
RESERVED_LOW = 4  # network address, router, DNS, reserved for future use
RESERVED_ADDRESSES = RESERVED_LOW + 1  # ... and the broadcast address: 5 on AWS and on Azure


class SubnetExhausted(Exception):
    """The request cannot be met in full; nothing was taken."""


def ip_text(value: int) -> str:
    """Dotted quad of an IPv4 address value (faster than ``str(IPv4Address(value))``)."""
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def prefix_text(block_base: int) -> str:
    return f"{ip_text(block_base)}/28"


class Usage:
    """Addresses in use across several subnets, and their peak: the cluster's, exactly."""

    __slots__ = ("peak", "peak_at", "used")

    def __init__(self) -> None:
        self.used = 0
        self.peak = 0
        self.peak_at = 0.0


class Subnet:
    """Free, used and peak addresses of one subnet; allocation of IPs and /28 prefixes."""

    __slots__ = (
        "_free_heap",
        "_fresh",
        "_fresh_end",
        "_kind",
        "_mask",
        "_open",
        "_queued",
        "base",
        "blocks_in_use",
        "capacity",
        "cidr",
        "id",
        "peak_blocks",
        "peak_used",
        "peak_used_at",
        "usage",
        "used",
    )

    def __init__(self, cidr: str, subnet_id: str = "", *, usage: Usage | None = None) -> None:
        net = ipaddress.IPv4Network(cidr, strict=True)
        if net.prefixlen > 28:
            raise ValueError(f"subnet {cidr}: /28 or larger is needed (a /28 prefix must fit)")
        self.cidr = str(net)
        self.id = subnet_id or f"subnet-{self.cidr}"
        self.base = int(net.network_address)
        blocks = net.num_addresses // BLOCK
        self.capacity = net.num_addresses - RESERVED_ADDRESSES  # addresses that can ever be handed out
        self.used = 0
        self.peak_used = 0
        self.peak_used_at = 0.0
        self.usage = usage if usage is not None else Usage()
        self._kind = bytearray(blocks)  # _FREE, _IPS or _PREFIX
        self._mask = array("H", bytes(2 * blocks))  # IP blocks: bit i set = address i of the block free
        self._queued = bytearray(blocks)  # 1: the block has an entry in _open
        self._open: list[int] = []  # IP blocks with a free address (a heap; stale entries skipped)
        self._free_heap: list[int] = []  # blocks freed again, all below _fresh (a heap, never stale)
        # The reserved addresses sit in the first and the last block: IP blocks that never empty.
        # Blocks in [_fresh, _fresh_end) have never been used and are not materialised anywhere.
        last = blocks - 1
        self._fresh, self._fresh_end = 1, max(last, 1)
        reserved = {0: _FULL & ~((1 << RESERVED_LOW) - 1)}
        reserved[last] = reserved.get(last, _FULL) & (_FULL >> 1)
        for block, bits in reserved.items():
            self._kind[block] = _IPS
            self._mask[block] = bits
            heapq.heappush(self._open, block)
            self._queued[block] = 1
        self.blocks_in_use = len(reserved)  # blocks holding anything, the reserved ones included
        self.peak_blocks = self.blocks_in_use

    # --- reading ------------------------------------------------------------------------------

    @property
    def free(self) -> int:
        return self.capacity - self.used

    @property
    def size(self) -> int:
        return self.capacity + RESERVED_ADDRESSES

    @property
    def free_blocks(self) -> int:
        """Whole free /28 blocks: what prefixes can still be delegated from."""
        return len(self._free_heap) + self._fresh_end - self._fresh

    def contains(self, value: int) -> bool:
        return 0 <= value - self.base < self.size

    # --- allocation -----------------------------------------------------------------------------

    def take_ips(self, count: int, now: float) -> list[int]:
        """``count`` individual addresses, lowest IP block first; SubnetExhausted if not all fit."""
        if count > self.capacity - self.used:
            raise SubnetExhausted(f"{self.cidr}: {count} addresses asked, {self.free} free")
        out: list[int] = []
        mask, heap = self._mask, self._open
        while len(out) < count:
            block = self._open_block()
            bits = mask[block]
            first = self.base + block * BLOCK - 1
            while bits and len(out) < count:
                low = bits & -bits
                out.append(first + low.bit_length())
                bits ^= low
            mask[block] = bits
            if not bits:
                heapq.heappop(heap)
                self._queued[block] = 0
        self._used(count, now)
        return out

    def take_prefixes(self, count: int, now: float) -> list[int]:
        """``count`` whole free /28 blocks (their base addresses); SubnetExhausted if not all fit."""
        if count > self.free_blocks:
            raise SubnetExhausted(
                f"{self.cidr}: {count} /28 prefixes asked, {self.free_blocks} whole blocks free"
            )
        bases = [self.base + self._take_block(_PREFIX) * BLOCK for _ in range(count)]
        self._used(BLOCK * count, now)
        return bases

    def give_ips(self, values: list[int] | tuple[int, ...]) -> None:
        """Individual addresses back (a release, a detached interface, a terminated node)."""
        mask, kind, queued = self._mask, self._kind, self._queued
        for value in values:
            block, bit = divmod(value - self.base, BLOCK)
            if not 0 <= block < len(kind) or kind[block] != _IPS or mask[block] >> bit & 1:
                raise ValueError(f"{ip_text(value)} is not in use in {self.cidr}")
            bits = mask[block] | 1 << bit
            mask[block] = bits
            if bits == _FULL:
                self._free_block(block)
            elif not queued[block]:
                heapq.heappush(self._open, block)
                queued[block] = 1
        self.used -= len(values)
        self.usage.used -= len(values)

    def give_prefixes(self, bases: list[int] | tuple[int, ...]) -> None:
        for base in bases:
            block = (base - self.base) // BLOCK
            if not 0 <= block < len(self._kind) or self._kind[block] != _PREFIX:
                raise ValueError(f"{prefix_text(base)} is not delegated from {self.cidr}")
            self._free_block(block)
        self.used -= BLOCK * len(bases)
        self.usage.used -= BLOCK * len(bases)

    # --- internals ------------------------------------------------------------------------------

    def _used(self, count: int, now: float) -> None:
        self.used += count
        if self.used > self.peak_used:
            self.peak_used = self.used
            self.peak_used_at = now
        usage = self.usage
        usage.used += count
        if usage.used > usage.peak:
            usage.peak = usage.used
            usage.peak_at = now

    def _open_block(self) -> int:
        """The lowest IP block with a free address, opening a free block when there is none."""
        heap, mask, kind = self._open, self._mask, self._kind
        while heap:
            block = heap[0]
            if kind[block] == _IPS and mask[block]:
                return block
            heapq.heappop(heap)
            self._queued[block] = 0
        block = self._take_block(_IPS)
        mask[block] = _FULL
        heapq.heappush(heap, block)
        self._queued[block] = 1
        return block

    def _take_block(self, kind: int) -> int:
        """The lowest free block (callers have checked that one is there)."""
        if self._free_heap:
            block = heapq.heappop(self._free_heap)
        else:
            block = self._fresh
            self._fresh += 1
        self._kind[block] = kind
        self.blocks_in_use += 1
        self.peak_blocks = max(self.peak_blocks, self.blocks_in_use)
        return block

    def _free_block(self, block: int) -> None:
        self._kind[block] = _FREE
        self._mask[block] = 0
        self.blocks_in_use -= 1
        heapq.heappush(self._free_heap, block)
