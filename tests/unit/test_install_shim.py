"""The pure parts of `cloud-cni install-shim`: the plugin file's text, path checks, ELF reading.

tests/integration/test_install_shim.py installs and execs the plugin.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipamd import elf
from ipamd.errors import InstallError
from ipamd.install_shim import ORIGIN_LIB, SHEBANG_MAX, install, plugin_text

TREE = PurePosixPath("/opt/cni/cloud-cni/3.11.7-0123456789ab")
INTERPRETER = Path(os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable))
ORIGIN = ORIGIN_LIB.encode()
DT_NEEDED, DT_HASH, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT, DT_RPATH, DT_RUNPATH = (
    1,
    4,
    5,
    6,
    10,
    11,
    15,
    29,
)
BASE = 0x400000  # the tiny files' load address: addresses and file offsets differ

# A value in a tiny file's dynamic entry or symbol: a name (its offset in the string table), a name
# and a number of bytes into it (a string sharing that name's tail), or a raw offset.
Value = str | tuple[str, int] | int


def tiny_elf(
    names: list[str],
    entries: list[tuple[int, Value]],
    symbols: list[Value] | None = None,
    *,
    is64: bool = True,
    order: str = "<",
    hash_tag: int = DT_HASH,
) -> bytes:
    """The smallest file the loader's view of a shared object needs: an ELF header, one PT_LOAD over
    the whole file at BASE, PT_DYNAMIC; the string table holds ``names``; with ``symbols``, a dynamic
    symbol table (and DT_HASH, which counts it, under ``hash_tag``) whose names are those."""
    ehsize, phentsize, syment = (64, 56, 24) if is64 else (52, 32, 16)
    strtab = b"\0" + b"".join(n.encode() + b"\0" for n in names)
    where = {n: strtab.index(b"\0" + n.encode() + b"\0") + 1 for n in names}

    def value(v: Value) -> int:
        if isinstance(v, str):
            return where[v]
        if isinstance(v, tuple):
            return where[v[0]] + v[1]
        return v

    strtab_at = ehsize + 2 * phentsize
    symtab_at = -(-(strtab_at + len(strtab)) // 8) * 8
    syms = [0, *(value(v) for v in symbols or [])]
    symtab = b"".join(struct.pack(order + "I", name).ljust(syment, b"\0") for name in syms)
    hash_at = symtab_at + len(symtab)
    table = struct.pack(f"{order}{3 + len(syms)}I", 1, len(syms), 0, *[0] * len(syms))  # nbucket, nchain
    dyn_at = -(-(hash_at + len(table)) // 8) * 8
    dyn = [(DT_STRTAB, BASE + strtab_at), (DT_STRSZ, len(strtab))]
    if symbols is not None:
        dyn += [(DT_SYMTAB, BASE + symtab_at), (DT_SYMENT, syment), (hash_tag, BASE + hash_at)]
    dyn += [(tag, value(v)) for tag, v in entries] + [(0, 0)]
    pair = struct.Struct(order + ("qQ" if is64 else "iI"))
    size = dyn_at + pair.size * len(dyn)
    if is64:
        header = struct.pack(
            order + "HHIQQQIHHHHHH", 3, 62, 1, 0, ehsize, 0, 0, ehsize, phentsize, 2, 0, 0, 0
        )
        load = struct.pack(order + "IIQQQQQQ", 1, 4, 0, BASE, BASE, size, size, 0x1000)
        dynamic = struct.pack(order + "IIQQQQQQ", 2, 4, dyn_at, BASE + dyn_at, 0, size - dyn_at, 0, 8)
    else:
        header = struct.pack(order + "HHIIIIIHHHHHH", 3, 3, 1, 0, ehsize, 0, 0, ehsize, phentsize, 2, 0, 0, 0)
        load = struct.pack(order + "IIIIIIII", 1, 0, BASE, BASE, size, size, 4, 0x1000)
        dynamic = struct.pack(order + "IIIIIIII", 2, dyn_at, BASE + dyn_at, 0, size - dyn_at, 0, 4, 8)
    ident = elf.MAGIC + bytes([2 if is64 else 1, 1 if order == "<" else 2, 1]) + bytes(9)
    image = bytearray(ident + header + load + dynamic + strtab)
    image += bytes(symtab_at - len(image)) + symtab + table
    image += bytes(dyn_at - len(image)) + b"".join(pair.pack(t, v) for t, v in dyn)
    return bytes(image)


def test_sh_plugin_points_the_loader_at_the_tree() -> None:
    text = plugin_text("sh", TREE, "3.11")
    assert text.startswith("#!/bin/sh\n")
    assert text.splitlines()[-1] == (
        f"LD_LIBRARY_PATH={TREE}/lib exec {TREE}/bin/python3.11 -I -S -X utf8 {TREE}/cloud-cni.py " + '"$@"'
    )


def test_shebang_plugin_is_the_entry_run_by_the_trees_interpreter() -> None:
    text = plugin_text("shebang", TREE, "3.11")
    lines = text.splitlines()
    assert lines[0] == f"#!{TREE}/bin/python3.11 -ISXutf8"
    code = "\n".join(lines[1:])
    assert f"sys.path.insert(0, '{TREE}/lib/site')" in code
    assert code.rstrip().endswith("from shim.main import main\n\nsys.exit(main())")
    compile(text, "cloud-cni", "exec")


def test_a_shebang_line_the_kernel_would_cut_is_refused() -> None:
    deep = PurePosixPath("/" + "d" * SHEBANG_MAX)
    with pytest.raises(InstallError, match="#! line"):
        plugin_text("shebang", deep, "3.11")


@pytest.mark.parametrize(
    "host",
    ["opt/cni/cloud-cni", "/opt/cni/cloud cni", "/opt/cni/$(reboot)", "/opt/cni/a'b", "/"],
    ids=["relative", "space", "subst", "quote", "root"],
)
def test_host_runtime_dir_must_be_a_plain_absolute_path(tmp_path: Path, host: str) -> None:
    with pytest.raises(InstallError, match="host runtime dir"):
        install(runtime_dir=tmp_path / "rt", cni_bin_dir=tmp_path, host_runtime_dir=host)
    assert not (tmp_path / "rt").exists(), "refused before touching anything"


def test_conflist_and_conf_dir_go_together(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="go together"):
        install(runtime_dir=tmp_path / "rt", cni_bin_dir=tmp_path, conflist=tmp_path / "x.conflist")


def test_elf_reads_what_this_interpreter_needs() -> None:
    data = INTERPRETER.read_bytes()
    dynamic = elf.dynamic(data)
    assert any(n.startswith("libc.so") for n in dynamic.needed), dynamic
    floor = elf.glibc_floor(data)
    assert floor is not None and floor >= (2, 2)


def test_loadable_image_keeps_everything_the_loader_reads() -> None:
    data = INTERPRETER.read_bytes()
    image = elf.loadable_image(data)
    assert len(image) <= len(data)
    assert elf.dynamic(image) == elf.dynamic(data)
    assert elf.glibc_floor(image) == elf.glibc_floor(data)
    assert elf.loadable_image(image) == image, "cutting twice changes nothing"


def test_not_elf_is_refused() -> None:
    with pytest.raises(elf.ElfError):
        elf.dynamic(b"#!/bin/sh\n")


# --- rewriting the library search path in a copy -------------------------------------------------

LONG = "/opt/python-3.11/lib"  # longer than $ORIGIN/../lib: room to rewrite
LIB = "libpython3.11.so.1.0"
IN_LIB = f"/opt/python/lib/{LIB}"  # a name that ends with another: linkers store them once
LAYOUTS = [pytest.param(True, "<", id="64le"), pytest.param(False, ">", id="32be")]


@pytest.mark.parametrize(
    ("names", "entries", "symbols"),
    [
        pytest.param([LIB, LONG], [(DT_NEEDED, LIB), (DT_RUNPATH, LONG)], None, id="runpath"),
        pytest.param([LIB, LONG], [(DT_NEEDED, LIB), (DT_RPATH, LONG)], None, id="rpath"),
        pytest.param(["/usr/local/lib"], [(DT_RUNPATH, "/usr/local/lib")], None, id="exactly-as-long"),
        pytest.param([LONG], [(DT_RPATH, LONG), (DT_RUNPATH, LONG)], None, id="rpath-and-runpath-share-it"),
        pytest.param([LONG, "/x"], [(DT_RPATH, "/x"), (DT_RUNPATH, LONG)], None, id="runpath-over-rpath"),
        pytest.param(
            [LIB, "Py_BytesMain", LONG],
            [(DT_NEEDED, LIB), (DT_RUNPATH, LONG)],
            ["Py_BytesMain", 0, LIB],
            id="symbols-elsewhere",
        ),
    ],
)
@pytest.mark.parametrize(("is64", "order"), LAYOUTS)
def test_a_long_enough_search_path_is_rewritten_in_place(
    names: list[str],
    entries: list[tuple[int, Value]],
    symbols: list[Value] | None,
    is64: bool,
    order: str,
) -> None:
    data = tiny_elf(names, entries, symbols, is64=is64, order=order)
    before = elf.dynamic(data)
    assert before.runpath != (ORIGIN_LIB,)
    copy = elf.rewrite_search_path(data, ORIGIN)
    assert copy is not None
    assert elf.dynamic(copy) == elf.Dynamic(before.needed, (ORIGIN_LIB,))
    assert len(copy) == len(data), "no offset moves"
    old = ":".join(before.runpath)  # the string the loader uses
    at = data.index(b"\0" + old.encode() + b"\0") + 1
    changed = [i for i, (a, b) in enumerate(zip(data, copy, strict=True)) if a != b]
    assert changed and at <= changed[0] and changed[-1] < at + len(old), "only the old string changes"
    assert copy[at : at + len(old) + 1] == ORIGIN.ljust(len(old) + 1, b"\0")


@pytest.mark.parametrize(
    ("names", "entries", "symbols"),
    [
        pytest.param([LIB], [(DT_NEEDED, LIB)], None, id="no-search-path"),
        pytest.param(["/usr/lib"], [(DT_RUNPATH, "/usr/lib")], None, id="too-short"),
        pytest.param(
            [LONG, "/x"], [(DT_RPATH, LONG), (DT_RUNPATH, "/x")], None, id="short-runpath-long-rpath"
        ),
        pytest.param(
            [LONG, LONG + "64"], [(DT_RUNPATH, LONG), (DT_RUNPATH, LONG + "64")], None, id="two-runpaths"
        ),
        pytest.param(
            [IN_LIB],
            [(DT_NEEDED, (IN_LIB, len(IN_LIB) - len(LIB))), (DT_RUNPATH, IN_LIB)],
            None,
            id="a-needed-name-in-its-tail",
        ),
        pytest.param(
            [IN_LIB],
            [(DT_RUNPATH, IN_LIB)],
            [(IN_LIB, len(IN_LIB) - len(LIB))],
            id="a-symbol-name-in-its-tail",
        ),
        pytest.param(
            ["X" + LONG],
            [(DT_NEEDED, "X" + LONG), (DT_RUNPATH, ("X" + LONG, 1))],
            None,
            id="the-tail-of-a-longer-name",
        ),
        pytest.param([LONG], [(DT_RUNPATH, 10_000)], None, id="past-the-string-table"),
        pytest.param([LONG], [(DT_RUNPATH, LONG)], [LONG, 10_000], id="a-symbol-name-past-the-table"),
    ],
)
@pytest.mark.parametrize(("is64", "order"), LAYOUTS)
def test_a_search_path_that_cannot_be_rewritten_alone_is_left(
    names: list[str],
    entries: list[tuple[int, Value]],
    symbols: list[Value] | None,
    is64: bool,
    order: str,
) -> None:
    data = tiny_elf(names, entries, symbols, is64=is64, order=order)
    assert elf.rewrite_search_path(data, ORIGIN) is None


def test_symbols_without_a_hash_table_are_not_counted_by_guess() -> None:
    names, entries = [LIB, LONG], [(DT_RUNPATH, LONG)]
    assert elf.rewrite_search_path(tiny_elf(names, entries, [LIB]), ORIGIN) is not None
    unknown = tiny_elf(names, entries, [LIB], hash_tag=0x6FFFFDF5)  # a tag the loader ignores
    assert elf.rewrite_search_path(unknown, ORIGIN) is None


def test_this_interpreters_copy_is_rewritten_and_the_source_is_not() -> None:
    data = INTERPRETER.read_bytes()
    before = elf.dynamic(data)
    if not any(n.startswith("libpython") for n in before.needed):
        pytest.skip("this interpreter links no libpython")
    old = ":".join(before.runpath).encode()
    copy = elf.rewrite_search_path(data, ORIGIN)
    if len(old) < len(ORIGIN) or before.runpath == (ORIGIN_LIB,):
        assert copy is None or before.runpath == (ORIGIN_LIB,)
        pytest.skip(f"this interpreter's search path is {before.runpath}")
    assert copy is not None and len(copy) == len(data)
    assert elf.dynamic(copy) == elf.Dynamic(before.needed, (ORIGIN_LIB,))
    assert elf.glibc_floor(copy) == elf.glibc_floor(data)
    assert INTERPRETER.read_bytes() == data
    image = elf.rewrite_search_path(elf.loadable_image(data), ORIGIN)
    assert image == elf.loadable_image(copy), "cut then rewritten, or rewritten then cut: the same file"


def exercise(data: bytes) -> None:
    """Everything the installer asks of a file: only ElfError may come out, and a rewrite is whole."""
    for read in (elf.dynamic, elf.loadable_image):
        with contextlib.suppress(elf.ElfError):
            read(data)
    copy = elf.rewrite_search_path(data, ORIGIN)
    if copy is not None:
        assert len(copy) == len(data) and elf.dynamic(copy).runpath == (ORIGIN_LIB,)


def test_every_truncation_of_a_tiny_file_is_read_or_refused() -> None:
    data = tiny_elf([LIB, "Py_BytesMain", LONG], [(DT_NEEDED, LIB), (DT_RUNPATH, LONG)], ["Py_BytesMain"])
    assert elf.rewrite_search_path(data, ORIGIN) is not None
    for cut in range(len(data) + 1):
        exercise(data[:cut])
    assert elf.rewrite_search_path(data[:-1], ORIGIN) is None, "its last dynamic entry is cut"


@settings(max_examples=400, deadline=None)
@given(
    st.data(),
    st.sampled_from(["tiny", "tiny32be", "interpreter"]),
)
def test_a_damaged_file_is_read_or_refused_never_a_crash(data: st.DataObject, which: str) -> None:
    if which == "interpreter":
        original = INTERPRETER.read_bytes()
        region = min(len(original), 4096)  # headers, symbols, strings, versions; the rest at random
    else:
        names, entries = [LIB, "Py_BytesMain", LONG], [(DT_NEEDED, LIB), (DT_RUNPATH, LONG)]
        is64 = which == "tiny"
        original = tiny_elf(names, entries, ["Py_BytesMain"], is64=is64, order="<" if is64 else ">")
        region = len(original)
    image = bytearray(original)
    for _ in range(data.draw(st.integers(0, 6), label="flips")):
        at = data.draw(st.integers(0, region - 1) | st.integers(0, len(image) - 1), label="at")
        image[at] = data.draw(st.sampled_from([0, 1, 0x7F, 0xFF]) | st.integers(0, 255), label="byte")
    cut = data.draw(st.integers(0, len(image)) | st.just(len(image)), label="cut")
    exercise(bytes(image[:cut]))


@pytest.mark.parametrize("cut", [10, 100, "half"], ids=["ident", "program-headers", "half"])
def test_an_interpreter_that_cannot_be_read_is_an_install_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: int | str
) -> None:
    data = INTERPRETER.read_bytes()
    damaged = tmp_path / INTERPRETER.name
    damaged.write_bytes(data[: len(data) // 2 if cut == "half" else int(cut)])
    monkeypatch.setattr(sys, "_base_executable", str(damaged))
    with pytest.raises(InstallError, match="cannot read the interpreter"):
        install(runtime_dir=tmp_path / "rt", cni_bin_dir=tmp_path)
    assert not (tmp_path / "rt").exists(), "refused before touching anything"
