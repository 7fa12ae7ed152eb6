"""shim.hpack and shim._huffman against RFC 7541's examples and the ``hpack`` library.

The shim's decoder must read what any HTTP/2 server or proxy sends, so it is checked on what the
``hpack`` library's encoder produces: Huffman and raw strings, the dynamic table across many
header blocks with eviction, table size updates, never-indexed fields.
"""

from __future__ import annotations

import random

import hpack
import pytest
from hpack import huffman_constants
from hpack.huffman import HuffmanEncoder

from shim import _huffman
from shim.hpack import Decoder, HpackError, decode_integer, encode, encode_integer

# Names a gRPC response carries, names from the static table, and others.
NAMES = [
    b":status",
    b"content-type",
    b"grpc-status",
    b"grpc-message",
    b"cni-code",
    b"date",
    b"server",
    b"set-cookie",
    b"cache-control",
    b"x-request-id",
    b"grpc-status-details-bin",
    b"www-authenticate",
]
VALUES = [b"200", b"application/grpc", b"0", b"5", b"11", b"", b"private", b"no-cache", b"gzip, deflate"]


PRINTABLE = bytes(32 + i % 95 for i in range(256))
TOKEN = bytes(b"%0123456789ABCDEF-_=+/abcxyz"[i % 28] for i in range(256))


def random_bytes(rng: random.Random, size: int) -> bytes:
    kind = rng.random()
    if kind < 0.6:  # printable ASCII: what headers mostly are
        return rng.randbytes(size).translate(PRINTABLE)
    if kind < 0.8:  # percent-encoded text, digits, base64
        return rng.randbytes(size).translate(TOKEN)
    return rng.randbytes(size)  # anything: long Huffman codes, EOS-adjacent symbols


def random_headers(rng: random.Random) -> list[tuple[bytes, bytes]]:
    headers = []
    for _ in range(rng.randrange(0, 9)):
        name = rng.choice(NAMES) if rng.random() < 0.7 else random_bytes(rng, rng.randrange(1, 20)).lower()
        roll = rng.random()
        if roll < 0.4:
            value = rng.choice(VALUES)
        elif roll < 0.98:
            value = random_bytes(rng, rng.randrange(0, 40))
        else:
            value = random_bytes(rng, rng.randrange(100, 1200))  # multi-byte lengths, evictions
        headers.append((name, value))
    return headers


def table_size(entries: list[tuple[bytes, bytes]]) -> int:
    return sum(len(n) + len(v) + 32 for n, v in entries)


# --- Huffman -----------------------------------------------------------------------------------


def test_huffman_table_is_rfc7541_appendix_b() -> None:
    assert list(_huffman.LENGTHS) == list(huffman_constants.REQUEST_CODES_LENGTH)
    assert _huffman.codes() == list(huffman_constants.REQUEST_CODES)


def test_huffman_decodes_every_symbol_alone_and_together() -> None:
    encoder = HuffmanEncoder(huffman_constants.REQUEST_CODES, huffman_constants.REQUEST_CODES_LENGTH)
    for symbol in range(256):
        assert _huffman.decode(encoder.encode(bytes((symbol,)))) == bytes((symbol,))
    everything = bytes(range(256)) * 3
    assert _huffman.decode(encoder.encode(everything)) == everything


def test_huffman_decodes_random_strings() -> None:
    rng = random.Random(7541)
    encoder = HuffmanEncoder(huffman_constants.REQUEST_CODES, huffman_constants.REQUEST_CODES_LENGTH)
    for _ in range(3000):
        data = random_bytes(rng, rng.randrange(0, 64))
        assert _huffman.decode(encoder.encode(data)) == data


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\xff\xff\xff\xff", "EOS symbol"),  # EOS (30 ones) and 2 bits of padding
        (b"\x1f\xff", "11 bits of padding"),  # 'a' (00011), then 11 ones
        (b"\x18", "not the most significant bits of EOS"),  # 'a', padded with 000
        (b"\xfe", "ends inside a code"),  # the start of a 10-bit code and nothing more
        (b"\xff", "8 bits of padding"),
    ],
    ids=["eos", "long-padding", "zero-padding", "truncated-code", "padding-byte"],
)
def test_huffman_rejects_malformed(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        _huffman.decode(data)


# --- integers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "prefix", "encoded"),
    [
        (10, 5, b"\x0a"),
        (1337, 5, b"\x1f\x9a\x0a"),
        (42, 8, b"\x2a"),
        (31, 5, b"\x1f\x00"),
        (127, 7, b"\x7f\x00"),
    ],
    ids=["C.1.1", "C.1.2", "C.1.3", "prefix-full", "prefix-full-7"],
)
def test_integer_encoding_rfc_examples(value: int, prefix: int, encoded: bytes) -> None:
    assert encode_integer(value, prefix) == encoded
    assert decode_integer(encoded, 0, prefix) == (value, len(encoded))


def test_integers_round_trip() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        prefix = rng.randrange(1, 9)
        value = rng.choice([rng.randrange(0, 300), rng.randrange(0, 1 << 32)])
        first = rng.randrange(256) & ~((1 << prefix) - 1) & 0xFF
        data = b"\xaa" + encode_integer(value, prefix, first) + b"\x55"
        assert decode_integer(data, 1, prefix) == (value, len(data) - 1)


# --- the decoder -------------------------------------------------------------------------------


def test_decoder_rfc7541_c4_requests_with_huffman() -> None:
    decoder = Decoder()
    blocks = ["828684418cf1e3c2e5f23a6ba0ab90f4ff", "828684be5886a8eb10649cbf"]
    blocks.append("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf")
    results = [decoder.decode(bytes.fromhex(b)) for b in blocks]
    assert results[0] == [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"www.example.com"),
    ]
    assert results[1][-1] == (b"cache-control", b"no-cache")
    assert results[2][-1] == (b"custom-key", b"custom-value")
    assert decoder.dynamic_table == [
        (b"custom-key", b"custom-value"),
        (b"cache-control", b"no-cache"),
        (b":authority", b"www.example.com"),
    ]
    assert decoder.table_size == 164


def test_decoder_rfc7541_c6_responses_with_eviction() -> None:
    decoder = Decoder(max_table_size=256)
    first = bytes.fromhex(
        "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff"
        "6e919d29ad171863c78f0b97c8e9ae82ae43d3"
    )
    second = bytes.fromhex("4883640effc1c0bf")
    third = bytes.fromhex(
        "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b"
        "3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007"
    )
    assert decoder.decode(first)[0] == (b":status", b"302")
    assert decoder.table_size == 222
    assert decoder.decode(second)[0] == (b":status", b"307")
    assert decoder.dynamic_table[-1] == (b"cache-control", b"private")  # :status 302 was evicted
    assert decoder.decode(third)[-1] == (
        b"set-cookie",
        b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    )
    assert decoder.dynamic_table == [
        (b"set-cookie", b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
        (b"content-encoding", b"gzip"),
        (b"date", b"Mon, 21 Oct 2013 20:13:22 GMT"),
    ]
    assert decoder.table_size == 215


def test_decoder_reads_what_the_hpack_library_encodes() -> None:
    """>= 20,000 header lists, on connections of 1-12 blocks sharing one dynamic table each,
    Huffman or not per block, never-indexed fields, and table size updates (up to 8 KiB,
    which our SETTINGS would then have advertised) between blocks."""
    rng = random.Random(20_000)
    lists = 0
    huffman_blocks = 0
    while lists < 20_000:
        advertised = rng.choice([4096, 4096, 8192, 256])
        encoder = hpack.Encoder()
        decoder = Decoder(max_table_size=advertised)
        if advertised != 4096:
            encoder.header_table_size = advertised
        for _ in range(rng.randrange(1, 13)):
            if rng.random() < 0.15:
                encoder.header_table_size = rng.choice(
                    [s for s in (0, 32, 100, 256, 1000) if s <= advertised]
                )
            headers = random_headers(rng)
            sensitive = [rng.random() < 0.1 for _ in headers]
            use_huffman = rng.random() < 0.6
            block = encoder.encode(
                [(n, v, s) for (n, v), s in zip(headers, sensitive, strict=True)], huffman=use_huffman
            )
            assert decoder.decode(block) == headers
            assert decoder.dynamic_table == list(encoder.header_table.dynamic_entries)
            assert decoder.table_size == table_size(decoder.dynamic_table)
            assert decoder.table_size <= decoder.table_size_limit
            lists += 1
            huffman_blocks += use_huffman
    assert huffman_blocks > 10_000


def test_decoder_size_update_to_zero_empties_the_table() -> None:
    decoder = Decoder()
    decoder.decode(b"\x40\x01a\x01b\x40\x01c\x01d")
    assert decoder.dynamic_table == [(b"c", b"d"), (b"a", b"b")]
    assert decoder.decode(b"\x20\x3f\xe1\x1f") == []  # size 0, then 4096 again
    assert decoder.dynamic_table == []
    assert decoder.table_size == 0
    with pytest.raises(HpackError, match="index 62 beyond"):
        decoder.decode(b"\xbe")
    decoder.decode(b"\x3f\x01")  # limit 32: no entry fits
    decoder.decode(b"\x40\x01a\x01b")
    assert decoder.dynamic_table == []


def test_decoder_entry_larger_than_the_table_empties_it() -> None:
    decoder = Decoder(max_table_size=100)
    decoder.decode(b"\x40\x01a\x01b")
    assert decoder.decode(b"\x40\x01x\x7f\x00" + b"v" * 127)[0][0] == b"x"
    assert decoder.dynamic_table == []


@pytest.mark.parametrize(
    ("block", "error"),
    [
        (b"\x80", "index 0"),
        (b"\xbe", "index 62 beyond the tables"),
        (b"\x7e\x00\x00", "index 62 beyond"),  # incremental indexing, name index 62
        (b"\x0f\x2f\x00", "index 62 beyond"),  # without indexing, name index 62
        (b"\xff", "truncated inside an integer"),
        (b"\xff\x80", "truncated inside an integer"),
        (b"\xff\xff\xff\xff\xff\x7f", "too large"),
        (b"\xff\x80\x80\x80\x80\x80\x80\x00", "too many continuation bytes"),
        (b"\x40", "string expected"),
        (b"\x41", "string expected"),
        (b"\x40\x05abc", "truncated inside a 5-byte string"),
        (b"\x00\x81\xff\x00", "8 bits of padding"),  # Huffman name: one byte of padding
        (b"\x00\x01a\x84\xff\xff\xff\xff", "EOS symbol"),  # Huffman value holds EOS
        (b"\x3f\xe2\x1f", "size update to 4097 exceeds the 4096 allowed"),
        (b"\x82\x20", "size update after a header field"),
    ],
    ids=[
        "index-0",
        "index-beyond",
        "name-index-beyond-incremental",
        "name-index-beyond-literal",
        "integer-prefix-only",
        "integer-truncated",
        "integer-too-large",
        "integer-overlong",
        "name-missing",
        "value-missing",
        "string-truncated",
        "huffman-padding",
        "huffman-eos",
        "size-update-too-big",
        "size-update-late",
    ],
)
def test_decoder_rejects_malformed_blocks(block: bytes, error: str) -> None:
    with pytest.raises(HpackError, match=error):
        Decoder().decode(block)


def test_decoder_bounds_the_decoded_header_list() -> None:
    decoder = Decoder(max_header_list_size=4096)
    decoder.decode(b"\x40\x01a" + encode_integer(1000, 7) + b"v" * 1000)  # 1,033 bytes, now indexed
    with pytest.raises(HpackError, match="header list larger than 4096"):
        decoder.decode(b"\xbe" * 4)


# --- the encoder -------------------------------------------------------------------------------


def test_encoder_uses_static_matches_and_literals_without_indexing() -> None:
    assert encode([(b":method", b"POST"), (b":scheme", b"http")]) == b"\x83\x86"
    assert encode([(b":path", b"/x")]) == b"\x04\x02/x"  # name index 4, value literal
    assert encode([(b"te", b"trailers")]) == b"\x00\x02te\x08trailers"


def test_encoder_output_is_read_by_the_hpack_library() -> None:
    rng = random.Random(97)
    for _ in range(3000):
        headers = random_headers(rng)
        if rng.random() < 0.3:
            headers.append(rng.choice([(b":method", b"POST"), (b":status", b"404"), (b":path", b"/")]))
        peer = hpack.Decoder()
        peer.max_header_list_size = 1 << 20
        block = encode(headers)
        assert peer.decode(block, raw=True) == headers
        assert list(peer.header_table.dynamic_entries) == []  # we never index
        assert Decoder().decode(block) == headers
