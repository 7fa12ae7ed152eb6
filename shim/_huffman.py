"""The HPACK Huffman code (RFC 7541 Appendix B) and a decoder for it.

The code is canonical (within one length, codes grow with the symbol; each length starts where the
previous one ended, shifted), so the 257 code lengths below define it completely; the codes are
rebuilt from them on the first decode. A response that uses no Huffman never pays for that.
tests/unit/test_hpack.py checks every code and length against the ``hpack`` library's table.

``decode`` raises ``ValueError`` on a malformed string; ``shim.hpack`` turns it into ``HpackError``.
"""

from __future__ import annotations

EOS = 256

# Code length in bits of each symbol: the 256 octets, then EOS (RFC 7541 Appendix B).
LENGTHS = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,  # 0-15
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,  # 16-31
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,  # 32-47
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,  # 48-63
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,  # 64-79
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,  # 80-95
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,  # 96-111
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,  # 112-127
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,  # 128-143
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,  # 144-159
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,  # 160-175
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,  # 176-191
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,  # 192-207
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,  # 208-223
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,  # 224-239
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,  # 240-255
    30,  # EOS
)  # fmt: skip

# Built on first use by _build(): see decode().
_tables: list[list[int]] = []


def codes() -> list[int]:
    """The code of each symbol (MSB-first, ``LENGTHS[s]`` bits), assigned canonically."""
    result = [0] * len(LENGTHS)
    code = 0
    previous = 0
    for symbol in sorted(range(len(LENGTHS)), key=lambda s: (LENGTHS[s], s)):
        code <<= LENGTHS[symbol] - previous
        previous = LENGTHS[symbol]
        result[symbol] = code
        code += 1
    return result


def _build() -> list[list[int]]:
    """Lookup tables of 256 entries, one per 8-bit step into a code: the first is indexed by the
    next 8 bits, and a code of up to 8 bits is found there; a longer one leads to a table for its
    next 8 bits, and so on (4 steps for the 30-bit codes). An entry is ``symbol << 5 | length``
    for a code that ends within the step, or ``-t`` to go on in ``_tables[t]``."""
    tables = [[0] * 256]
    for symbol, (code, length) in enumerate(zip(codes(), LENGTHS, strict=True)):
        table = tables[0]
        depth = 8
        while length > depth:
            index = code >> (length - depth) & 0xFF
            if table[index] == 0:
                tables.append([0] * 256)
                table[index] = 1 - len(tables)
            table = tables[-table[index]]
            depth += 8
        spare = depth - length  # bits of the step after the code: any value leads to it
        first = code << spare & 0xFF
        for low in range(1 << spare):
            table[first | low] = symbol << 5 | length
    _tables[:] = tables
    return _tables


def _symbol(tables: list[list[int]], acc: int, nbits: int) -> int:
    """The entry of the code at the top of the ``nbits``-bit ``acc``, or 0 if it is longer."""
    depth = 8
    entry = tables[0][acc >> (nbits - 8)]
    while entry < 0:
        depth += 8
        if depth > nbits:
            return 0
        entry = tables[-entry][acc >> (nbits - depth) & 0xFF]
    return entry


def decode(data: bytes) -> bytes:
    """Decode a Huffman-coded HPACK string literal. ``ValueError`` when it holds the EOS symbol,
    ends inside a code, or is padded with more than 7 bits or with anything but 1s (RFC 7541 5.2)."""
    tables = _tables or _build()
    first = tables[0]
    out = bytearray()
    acc = 0  # the bits not decoded yet: exactly nbits of them
    nbits = 0
    for byte in data:
        acc = acc << 8 | byte
        nbits += 8
        while nbits >= 8:
            entry = first[acc >> (nbits - 8)]
            if entry < 0:
                entry = _symbol(tables, acc, nbits)
                if not entry:
                    break  # the rest of a long code is in the next bytes
                if entry >> 5 == EOS:
                    raise ValueError("Huffman string contains the EOS symbol")
            out.append(entry >> 5)
            nbits -= entry & 31
            acc &= (1 << nbits) - 1
    # The tail: whole codes shorter than 8 bits, then padding, which must be the start of EOS (1s).
    while nbits:
        entry = _symbol(tables, acc << 32 | 0xFFFFFFFF, nbits + 32)
        if entry & 31 > nbits:
            if nbits > 7:
                raise ValueError(f"Huffman string ends inside a code or has {nbits} bits of padding")
            if acc != (1 << nbits) - 1:
                raise ValueError("Huffman string padding is not the most significant bits of EOS")
            break
        out.append(entry >> 5)
        nbits -= entry & 31
        acc &= (1 << nbits) - 1
    return bytes(out)
