"""Just enough ELF for ``install_shim``: what a binary needs to load, and its loadable image.

The shim's runtime is copied from the image onto nodes that have glibc and nothing else, so the
installer must know what each copied binary links against (``DT_NEEDED``), where it looks for it
(``DT_RUNPATH``/``DT_RPATH``), and which glibc symbol versions it uses. ``loadable_image`` drops what
the loader never reads (debug info, symbol tables, section headers: everything after the last
segment), which turns a 23 MB debug build of libpython into a 5 MB one without binutils in the image.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

MAGIC = b"\x7fELF"
_PT_LOAD, _PT_DYNAMIC = 1, 2
_DT_NULL, _DT_NEEDED, _DT_STRTAB, _DT_RPATH, _DT_RUNPATH = 0, 1, 5, 15, 29
_GLIBC_VERSION = re.compile(rb"GLIBC_(\d+)\.(\d+)(?:\.(\d+))?\x00")


class ElfError(ValueError):
    """Not an ELF file this module can read."""


@dataclass(frozen=True)
class Dynamic:
    needed: tuple[str, ...]
    runpath: tuple[str, ...]  # DT_RUNPATH entries, else DT_RPATH entries; empty when neither


@dataclass(frozen=True)
class _Layout:
    """Struct formats for one ELF class and byte order."""

    header: struct.Struct  # after e_ident: e_type .. e_shstrndx
    phdr: struct.Struct
    dyn: struct.Struct
    is64: bool


def _layout(data: bytes) -> _Layout:
    if data[:4] != MAGIC or len(data) < 16:
        raise ElfError("not an ELF file")
    order = {1: "<", 2: ">"}.get(data[5])
    if order is None or data[4] not in (1, 2):
        raise ElfError(f"unknown ELF class {data[4]} or byte order {data[5]}")
    if data[4] == 2:
        return _Layout(
            struct.Struct(order + "HHIQQQIHHHHHH"),
            struct.Struct(order + "IIQQQQQQ"),
            struct.Struct(order + "qQ"),
            True,
        )
    return _Layout(
        struct.Struct(order + "HHIIIIIHHHHHH"),
        struct.Struct(order + "IIIIIIII"),
        struct.Struct(order + "iI"),
        False,
    )


def _segments(data: bytes, lay: _Layout) -> list[tuple[int, int, int, int]]:
    """(p_type, p_offset, p_vaddr, p_filesz) of every program header."""
    header = lay.header.unpack_from(data, 16)
    phoff, phentsize, phnum = header[4], header[8], header[9]
    out = []
    for i in range(phnum):
        fields = lay.phdr.unpack_from(data, phoff + i * phentsize)
        if lay.is64:  # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, ...
            out.append((fields[0], fields[2], fields[3], fields[5]))
        else:  # p_type, p_offset, p_vaddr, p_paddr, p_filesz, ...
            out.append((fields[0], fields[1], fields[2], fields[4]))
    return out


def dynamic(data: bytes) -> Dynamic:
    """The libraries ``data`` needs and its library search path, from the dynamic segment."""
    lay = _layout(data)
    segments = _segments(data, lay)
    dyn = [s for s in segments if s[0] == _PT_DYNAMIC]
    if not dyn:
        return Dynamic((), ())  # statically linked
    _, offset, _, size = dyn[0]
    entries: list[tuple[int, int]] = []
    for pos in range(offset, offset + size, lay.dyn.size):
        tag, value = lay.dyn.unpack_from(data, pos)
        if tag == _DT_NULL:
            break
        entries.append((tag, value))
    strtab_vaddr = next((v for t, v in entries if t == _DT_STRTAB), None)
    if strtab_vaddr is None:
        raise ElfError("dynamic segment without a string table")
    load = [s for s in segments if s[0] == _PT_LOAD and s[2] <= strtab_vaddr < s[2] + s[3]]
    if not load:
        raise ElfError("string table outside every loaded segment")
    strtab = strtab_vaddr - load[0][2] + load[0][1]

    def string(at: int) -> str:
        end = data.index(b"\x00", strtab + at)
        return data[strtab + at : end].decode("utf-8", "surrogateescape")

    needed = tuple(string(v) for t, v in entries if t == _DT_NEEDED)
    path = next((string(v) for t, v in entries if t == _DT_RUNPATH), None)
    if path is None:
        path = next((string(v) for t, v in entries if t == _DT_RPATH), "")
    return Dynamic(needed, tuple(p for p in path.split(":") if p))


def glibc_floor(data: bytes) -> tuple[int, ...] | None:
    """The newest ``GLIBC_x.y`` symbol version ``data`` refers to: the oldest glibc it runs on."""
    versions = [tuple(int(g) for g in m.groups() if g is not None) for m in _GLIBC_VERSION.finditer(data)]
    return max(versions, default=None)


def loadable_image(data: bytes) -> bytes:
    """``data`` cut after its last segment, without section headers (what ``sstrip`` does).

    The kernel and the dynamic loader read only the program headers and the segments they describe;
    debug sections, ``.symtab`` and the section header table sit after them in a linked file. The
    result loads and runs the same; debuggers see only the dynamic symbols. Returns ``data``
    unchanged when its layout is not the usual one (section headers before the end of a segment).
    """
    lay = _layout(data)
    header = list(lay.header.unpack_from(data, 16))
    phoff, shoff, phentsize, phnum = header[4], header[5], header[8], header[9]
    end = max([phoff + phentsize * phnum, *(off + size for _, off, _, size in _segments(data, lay))])
    if end >= len(data) or (shoff and shoff < end):
        return data
    header[5], header[11], header[12] = 0, 0, 0  # e_shoff, e_shnum, e_shstrndx
    image = bytearray(data[:end])
    lay.header.pack_into(image, 16, *header)
    return bytes(image)
