"""HPACK (RFC 7541): a small encoder for request headers and a complete decoder for responses.

The encoder never touches the dynamic table and never uses Huffman: an exact static-table match
is sent as an indexed field, anything else as a literal without indexing (with the static-table
name index when there is one). The peer's decoder then needs no state from us.

The decoder implements all of RFC 7541, because servers and proxies other than grpcio use the
dynamic table and Huffman: the static table, the dynamic table with size updates and eviction,
prefix integers and Huffman-coded strings (``shim._huffman``, imported on the first Huffman
string). Names and values are bytes, as on the wire. Anything malformed raises ``HpackError``,
which HTTP/2 treats as a connection error of type COMPRESSION_ERROR.
"""

from __future__ import annotations

# RFC 7541 Appendix A; index i is STATIC_TABLE[i - 1].
STATIC_TABLE = (
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
)
_STATIC_COUNT = len(STATIC_TABLE)
ENTRY_OVERHEAD = 32  # RFC 7541 4.1: an entry's size is len(name) + len(value) + 32
DEFAULT_TABLE_SIZE = 4096  # SETTINGS_HEADER_TABLE_SIZE unless a peer advertises another
_MAX_INTEGER = (1 << 32) - 1  # larger than any length or index a header block can carry

# Encoder lookups, first index wins (RFC 7541 lists a name's bare entry first).
_STATIC_FIELD = {field: i for i, field in reversed(tuple(enumerate(STATIC_TABLE, 1)))}
_STATIC_NAME = {name: i for i, (name, _) in reversed(tuple(enumerate(STATIC_TABLE, 1)))}


class HpackError(Exception):
    """A header block that is not valid HPACK: a COMPRESSION_ERROR for the HTTP/2 connection."""


def encode_integer(value: int, prefix_bits: int, first_byte: int = 0) -> bytes:
    """RFC 7541 5.1: ``value`` in a ``prefix_bits``-bit prefix, the rest of ``first_byte`` kept."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first_byte | value,))
    out = bytearray((first_byte | limit,))
    value -= limit
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode(headers: list[tuple[bytes, bytes]]) -> bytes:
    """A header block for ``headers`` that leaves the peer's dynamic table alone."""
    out = bytearray()
    for name, value in headers:
        index = _STATIC_FIELD.get((name, value))
        if index is not None:
            out += encode_integer(index, 7, 0x80)  # 6.1 indexed header field
            continue
        name_index = _STATIC_NAME.get(name, 0)
        out += encode_integer(name_index, 4)  # 6.2.2 literal header field without indexing
        if not name_index:
            out += encode_integer(len(name), 7)
            out += name
        out += encode_integer(len(value), 7)
        out += value
    return bytes(out)


def decode_integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """RFC 7541 5.1: the integer whose prefix is the low ``prefix_bits`` of ``data[pos]``;
    returns it and the position after it."""
    if pos >= len(data):
        raise HpackError("header block truncated: integer expected")
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise HpackError("header block truncated inside an integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if value > _MAX_INTEGER:
            raise HpackError("integer in header block is too large")
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 35:  # only zero continuation bytes could get here: an overlong encoding
            raise HpackError("integer in header block has too many continuation bytes")


def decode_string(data: bytes, pos: int) -> tuple[bytes, int]:
    """RFC 7541 5.2: a string literal (raw or Huffman-coded) and the position after it."""
    if pos >= len(data):
        raise HpackError("header block truncated: string expected")
    huffman = data[pos] & 0x80
    length, pos = decode_integer(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise HpackError(f"header block truncated inside a {length}-byte string")
    raw = data[pos:end]
    if huffman:
        from shim import _huffman

        try:
            raw = _huffman.decode(raw)
        except ValueError as exc:
            raise HpackError(str(exc)) from exc
    return raw, end


class Decoder:
    """Decodes the header blocks of one connection, in order (they share the dynamic table).

    ``max_table_size`` is the SETTINGS_HEADER_TABLE_SIZE we advertised: the ceiling for the size
    updates the peer may send. ``max_header_list_size`` bounds the decoded list (names + values
    + 32 per field), since a few bytes of indexed fields can stand for kilobytes of headers.
    """

    def __init__(
        self, max_table_size: int = DEFAULT_TABLE_SIZE, max_header_list_size: int = 256 * 1024
    ) -> None:
        self.settings_table_size = max_table_size
        self.max_header_list_size = max_header_list_size
        self.table_size_limit = max_table_size  # the current limit, moved by size updates
        self.table_size = 0
        self._entries: list[tuple[bytes, bytes]] = []  # the dynamic table, newest last

    @property
    def dynamic_table(self) -> list[tuple[bytes, bytes]]:
        """The dynamic table, newest entry (index 62) first."""
        return self._entries[::-1]

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        list_size = 0
        pos = 0
        end = len(block)
        while pos < end:
            first = block[pos]
            if first & 0x80:  # 6.1 indexed header field
                index, pos = decode_integer(block, pos, 7)
                name, value = self._field(index)
            elif first & 0x40:  # 6.2.1 literal header field with incremental indexing
                index, pos = decode_integer(block, pos, 6)
                if index:
                    name = self._field(index)[0]
                else:
                    name, pos = decode_string(block, pos)
                value, pos = decode_string(block, pos)
                self._add(name, value)
            elif first & 0x20:  # 6.3 dynamic table size update
                if headers:
                    raise HpackError("dynamic table size update after a header field")
                size, pos = decode_integer(block, pos, 5)
                if size > self.settings_table_size:
                    raise HpackError(
                        f"dynamic table size update to {size} exceeds the {self.settings_table_size} allowed"
                    )
                self.table_size_limit = size
                self._evict(0)
                continue
            else:  # 6.2.2 without indexing (0000) and 6.2.3 never indexed (0001)
                index, pos = decode_integer(block, pos, 4)
                if index:
                    name = self._field(index)[0]
                else:
                    name, pos = decode_string(block, pos)
                value, pos = decode_string(block, pos)
            list_size += len(name) + len(value) + ENTRY_OVERHEAD
            if list_size > self.max_header_list_size:
                raise HpackError(f"header list larger than {self.max_header_list_size} bytes")
            headers.append((name, value))
        return headers

    def _field(self, index: int) -> tuple[bytes, bytes]:
        if index == 0:
            raise HpackError("header field index 0")
        if index <= _STATIC_COUNT:
            return STATIC_TABLE[index - 1]
        dynamic = index - _STATIC_COUNT
        if dynamic > len(self._entries):
            raise HpackError(
                f"header field index {index} beyond the tables ({_STATIC_COUNT} static, "
                f"{len(self._entries)} dynamic)"
            )
        return self._entries[-dynamic]

    def _evict(self, room: int) -> None:
        """Drop the oldest entries until ``room`` more bytes fit under the current limit."""
        entries = self._entries
        while entries and self.table_size + room > self.table_size_limit:
            name, value = entries.pop(0)
            self.table_size -= len(name) + len(value) + ENTRY_OVERHEAD

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + ENTRY_OVERHEAD
        if size > self.table_size_limit:  # 4.4: too big for any table: it empties it
            self._entries.clear()
            self.table_size = 0
            return
        self._evict(size)
        self._entries.append((name, value))
        self.table_size += size
