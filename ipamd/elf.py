"""Just enough ELF for ``install_shim``: what a binary needs to load, and its loadable image.

The shim's runtime is copied from the image onto nodes that have glibc and nothing else, so the
installer must know what each copied binary links against (``DT_NEEDED``), where it looks for it
(``DT_RUNPATH``/``DT_RPATH``), and which glibc symbol versions it uses. ``loadable_image`` drops what
the loader never reads (debug info, symbol tables, section headers: everything after the last
segment), which turns a 23 MB debug build of libpython into a 5 MB one without binutils in the image.
``rewrite_search_path`` points a copy of the interpreter at ``$ORIGIN/../lib`` in place, as patchelf
does when the new path is no longer than the old one.

Everything is read from the program headers and the dynamic segment (section headers are optional,
and ``loadable_image`` drops them), and every offset and count is checked against the file: a file
this module cannot read raises ``ElfError``, never anything else.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any

MAGIC = b"\x7fELF"
_PT_LOAD, _PT_DYNAMIC = 1, 2
_DT_NULL, _DT_NEEDED, _DT_HASH, _DT_STRTAB, _DT_SYMTAB = 0, 1, 4, 5, 6
_DT_STRSZ, _DT_SYMENT, _DT_RPATH, _DT_RUNPATH = 10, 11, 15, 29
_DT_GNU_HASH = 0x6FFFFEF5
_DT_VERDEF, _DT_VERDEFNUM, _DT_VERNEED, _DT_VERNEEDNUM = 0x6FFFFFFC, 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF
# Dynamic entries whose value is an offset into the string table: NEEDED, SONAME, RPATH, RUNPATH,
# and the rarer CONFIG, DEPAUDIT, AUDIT (0x6ffffefa-c), AUXILIARY and FILTER (0x7ffffffd, 0x7fffffff).
_DT_STRINGS = frozenset({1, 14, 15, 29, 0x6FFFFEFA, 0x6FFFFEFB, 0x6FFFFEFC, 0x7FFFFFFD, 0x7FFFFFFF})
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
    order: str  # "<" or ">"


@dataclass(frozen=True)
class _Segment:
    type: int
    offset: int
    vaddr: int
    filesz: int


@dataclass(frozen=True)
class _Table:
    """The dynamic segment of one file, its string table located in the file."""

    lay: _Layout
    entries: tuple[tuple[int, int], ...]  # (d_tag, d_val) up to DT_NULL
    loads: tuple[_Segment, ...]
    strtab: int  # file offset
    strsz: int

    def first(self, tag: int) -> int | None:
        return next((v for t, v in self.entries if t == tag), None)

    def string(self, data: bytes, at: int) -> str:
        end = data.find(b"\x00", self.strtab + at, self.strtab + self.strsz) if 0 <= at < self.strsz else -1
        if end < 0:
            raise ElfError(f"string {at} outside the string table ({self.strsz} bytes)")
        return data[self.strtab + at : end].decode("utf-8", "surrogateescape")

    def locate(self, vaddr: int, size: int) -> tuple[int, int]:
        """The file offset of ``size`` bytes at ``vaddr``, and where its segment's file part ends."""
        for seg in self.loads:
            if seg.vaddr <= vaddr and vaddr + size <= seg.vaddr + seg.filesz:
                return vaddr - seg.vaddr + seg.offset, seg.offset + seg.filesz
        raise ElfError(f"{size} bytes at address {vaddr:#x} are outside every loaded segment")


def _unpack(fmt: struct.Struct, data: bytes, at: int, end: int | None = None) -> tuple[Any, ...]:
    if at < 0 or at + fmt.size > (len(data) if end is None else min(end, len(data))):
        raise ElfError(f"{fmt.size} bytes at {at:#x} run past the end of the file or segment")
    return fmt.unpack_from(data, at)


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
            order,
        )
    return _Layout(
        struct.Struct(order + "HHIIIIIHHHHHH"),
        struct.Struct(order + "IIIIIIII"),
        struct.Struct(order + "iI"),
        False,
        order,
    )


def _segments(data: bytes, lay: _Layout) -> list[_Segment]:
    """Every program header."""
    header = _unpack(lay.header, data, 16)
    phoff, phentsize, phnum = header[4], header[8], header[9]
    if phnum and phentsize < lay.phdr.size:
        raise ElfError(f"program headers of {phentsize} bytes, expected {lay.phdr.size}")
    out = []
    for i in range(phnum):
        fields = _unpack(lay.phdr, data, phoff + i * phentsize)
        if lay.is64:  # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, ...
            out.append(_Segment(fields[0], fields[2], fields[3], fields[5]))
        else:  # p_type, p_offset, p_vaddr, p_paddr, p_filesz, ...
            out.append(_Segment(fields[0], fields[1], fields[2], fields[4]))
    return out


def _table(data: bytes) -> _Table | None:
    """The dynamic segment and its string table; None for a statically linked file."""
    lay = _layout(data)
    segments = _segments(data, lay)
    dyn = [s for s in segments if s.type == _PT_DYNAMIC]
    if not dyn:
        return None
    if dyn[0].offset + dyn[0].filesz > len(data):
        raise ElfError("dynamic segment past the end of the file")
    entries: list[tuple[int, int]] = []
    for pos in range(dyn[0].offset, dyn[0].offset + dyn[0].filesz - lay.dyn.size + 1, lay.dyn.size):
        tag, value = lay.dyn.unpack_from(data, pos)
        if tag == _DT_NULL:
            break
        entries.append((tag, value))
    loads = tuple(s for s in segments if s.type == _PT_LOAD and s.offset + s.filesz <= len(data))
    table = _Table(lay, tuple(entries), loads, 0, 0)
    strtab_vaddr, strsz = table.first(_DT_STRTAB), table.first(_DT_STRSZ)
    if strtab_vaddr is None or strsz is None:
        raise ElfError("dynamic segment without a string table")
    strtab, _ = table.locate(strtab_vaddr, strsz)
    return _Table(lay, tuple(entries), loads, strtab, strsz)


def dynamic(data: bytes) -> Dynamic:
    """The libraries ``data`` needs and its library search path, from the dynamic segment."""
    table = _table(data)
    if table is None:
        return Dynamic((), ())  # statically linked
    needed = tuple(table.string(data, v) for t, v in table.entries if t == _DT_NEEDED)
    at = table.first(_DT_RUNPATH)
    if at is None:
        at = table.first(_DT_RPATH)
    path = "" if at is None else table.string(data, at)
    return Dynamic(needed, tuple(p for p in path.split(":") if p))


def rewrite_search_path(data: bytes, path: bytes) -> bytes | None:
    """A copy of ``data`` whose library search path reads ``path``, or None where that cannot be done
    in place: no search path, one shorter than ``path``, or anything unexpected about the file.

    The string of the entry the loader uses (``DT_RUNPATH``; ``DT_RPATH`` only when there is no
    ``DT_RUNPATH``) is overwritten with ``path`` and padded with NULs to its old length, so no offset
    in the file moves. Linkers share the tail of one string with another (``libfoo.so`` inside
    ``/x/libfoo.so``), so the string must be the search path's alone: no other name (dynamic entry,
    symbol, version) may start inside it, and it must not be the tail of a longer string.
    """
    if b"\x00" in path:
        return None
    try:
        table = _table(data)
        if table is None:
            return None
        tag = _DT_RUNPATH if table.first(_DT_RUNPATH) is not None else _DT_RPATH
        starts = {v for t, v in table.entries if t == tag}
        if len(starts) != 1:
            return None  # none, or two different ones: which one wins depends on the loader
        [at] = starts
        old = table.string(data, at).encode("utf-8", "surrogateescape")
        if len(old) < len(path):
            return None
        if at > 0 and data[table.strtab + at - 1] != 0:
            return None  # the tail of a longer string
        # DT_RPATH and DT_RUNPATH may name the same string (old ld with --enable-new-dtags): both move.
        search = {(t, v) for t, v in table.entries if t in (_DT_RPATH, _DT_RUNPATH) and v == at}
        others = [v for v in _string_refs(data, table, skip=search) if at <= v < at + len(old)]
        if others:
            return None
        image = bytearray(data)
        image[table.strtab + at : table.strtab + at + len(old)] = path.ljust(len(old), b"\x00")
        result = bytes(image)
        done = dynamic(result).runpath
    except ElfError:
        return None
    wanted = path.decode("utf-8", "surrogateescape")
    return result if done == tuple(p for p in wanted.split(":") if p) else None


def _string_refs(data: bytes, table: _Table, skip: set[tuple[int, int]]) -> list[int]:
    """Every offset into the string table that something in ``data`` names, but the entries in ``skip``:
    the dynamic entries, the dynamic symbols' names, and the version definitions and needs."""
    refs = [v for t, v in table.entries if t in _DT_STRINGS and (t, v) not in skip]
    u16, u32 = struct.Struct(table.lay.order + "H"), struct.Struct(table.lay.order + "I")

    symtab = table.first(_DT_SYMTAB)
    if symtab is not None:
        syment = table.first(_DT_SYMENT) or (24 if table.lay.is64 else 16)
        count = _symbol_count(data, table)
        if syment < 4 or count > len(data):
            raise ElfError(f"{count} symbols of {syment} bytes")
        at, end = table.locate(symtab, syment * count)
        refs += [_unpack(u32, data, at + i * syment, end)[0] for i in range(count)]  # st_name

    verneed, num = table.first(_DT_VERNEED), table.first(_DT_VERNEEDNUM) or 0
    if verneed is not None:
        at, end = table.locate(verneed, 16)
        for _ in range(min(num, (end - at) // 16 + 1)):
            # Elf_Verneed: vn_version, vn_cnt (u16), vn_file, vn_aux, vn_next (u32)
            cnt = _unpack(u16, data, at + 2, end)[0]
            file, aux, nxt = (_unpack(u32, data, at + k, end)[0] for k in (4, 8, 12))
            refs.append(file)
            entry = at + aux
            for _ in range(cnt):  # Elf_Vernaux: vna_hash, vna_flags, vna_other, vna_name, vna_next
                refs.append(_unpack(u32, data, entry + 8, end)[0])
                entry += _unpack(u32, data, entry + 12, end)[0]
            if nxt == 0:
                break
            at += nxt
    verdef, num = table.first(_DT_VERDEF), table.first(_DT_VERDEFNUM) or 0
    if verdef is not None:
        at, end = table.locate(verdef, 20)
        for _ in range(min(num, (end - at) // 20 + 1)):
            # Elf_Verdef: vd_version, vd_flags, vd_ndx, vd_cnt (u16), vd_hash, vd_aux, vd_next (u32)
            cnt = _unpack(u16, data, at + 6, end)[0]
            aux, nxt = (_unpack(u32, data, at + k, end)[0] for k in (12, 16))
            entry = at + aux
            for _ in range(cnt):  # Elf_Verdaux: vda_name, vda_next
                refs.append(_unpack(u32, data, entry, end)[0])
                entry += _unpack(u32, data, entry + 4, end)[0]
            if nxt == 0:
                break
            at += nxt
    if any(not 0 <= r < table.strsz for r in refs):
        raise ElfError("a name outside the string table")
    return refs


def _symbol_count(data: bytes, table: _Table) -> int:
    """How many dynamic symbols there are: DT_HASH says; DT_GNU_HASH has to be walked."""
    u32 = struct.Struct(table.lay.order + "I")
    sysv = table.first(_DT_HASH)
    if sysv is not None:
        at, end = table.locate(sysv, 8)
        return int(_unpack(u32, data, at + 4, end)[0])  # nchain
    gnu = table.first(_DT_GNU_HASH)
    if gnu is None:
        raise ElfError("dynamic symbols without a hash table: their number is unknown")
    at, end = table.locate(gnu, 16)
    nbuckets, symoffset, bloom_size = (_unpack(u32, data, at + k, end)[0] for k in (0, 4, 8))
    buckets = at + 16 + bloom_size * (8 if table.lay.is64 else 4)
    if buckets + 4 * nbuckets > end:
        raise ElfError("GNU hash table past the end of its segment")
    last = max(struct.unpack_from(f"{table.lay.order}{nbuckets}I", data, buckets), default=0)
    if last < symoffset:
        return int(symoffset)  # every bucket empty
    chain = buckets + 4 * nbuckets
    while not _unpack(u32, data, chain + 4 * (last - symoffset), end)[0] & 1:  # bit 0 ends a chain
        last += 1
    return int(last) + 1


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
    header = list(_unpack(lay.header, data, 16))
    phoff, shoff, phentsize, phnum = header[4], header[5], header[8], header[9]
    ends = [16 + lay.header.size, phoff + phentsize * phnum]  # the ELF header, the program headers
    end = max([*ends, *(s.offset + s.filesz for s in _segments(data, lay))])
    if end >= len(data) or (shoff and shoff < end):
        return data
    header[5], header[11], header[12] = 0, 0, 0  # e_shoff, e_shnum, e_shstrndx
    image = bytearray(data[:end])
    lay.header.pack_into(image, 16, *header)
    return bytes(image)
