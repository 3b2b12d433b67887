#!/usr/bin/env python3
"""Writes the committed seed corpora in fuzz/corpus/<target>/.

Run from anywhere: `python3 fuzz/make_seeds.py`. It rewrites the seed files
(named seed-*) and leaves anything else in the directories alone. The
frame_split seeds follow the input layout in fuzz/src/split.rs.
"""

import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
UUID = "550e8400-e29b-41d4-a716-446655440000"


def publish(payload, extra=""):
    return (
        '{"type":"publish","topic":"orders","message":{"id":"%s","payload":%s}%s}'
        % (UUID, payload, extra)
    )


CLIENT_MESSAGE = {
    "ping": '{"type":"ping"}',
    "ping-request-id": '{"type":"ping","request_id":"z"}',
    "subscribe-full": '{"type":"subscribe","topic":"orders","last_n":5,"client_id":"ui","request_id":"s1"}',
    "subscribe-minimal": '{"type":"subscribe","topic":"orders"}',
    "subscribe-last-n-null": '{"type":"subscribe","topic":"t","last_n":null,"client_id":null}',
    "subscribe-last-n-u64-max": '{"type":"subscribe","topic":"t","last_n":18446744073709551615}',
    "subscribe-last-n-past-u64": '{"type":"subscribe","topic":"t","last_n":18446744073709551616}',
    "subscribe-last-n-negative": '{"type":"subscribe","topic":"t","last_n":-1,"request_id":"r"}',
    "subscribe-last-n-float": '{"type":"subscribe","topic":"t","last_n":1.5}',
    "subscribe-last-n-exponent": '{"type":"subscribe","topic":"t","last_n":1e2}',
    "subscribe-last-n-minus-zero": '{"type":"subscribe","topic":"t","last_n":-0}',
    "subscribe-no-topic": '{"type":"subscribe","request_id":"r1"}',
    "subscribe-since-seq": '{"type":"subscribe","topic":"t","since_seq":41,"epoch":"9f3a-3","request_id":"s2"}',
    "subscribe-since-seq-no-epoch": '{"type":"subscribe","topic":"t","since_seq":0,"last_n":null}',
    "subscribe-since-seq-with-last-n": '{"type":"subscribe","topic":"t","since_seq":1,"last_n":0,"request_id":"r"}',
    "subscribe-since-seq-negative": '{"type":"subscribe","topic":"t","since_seq":-1,"request_id":"r"}',
    "subscribe-epoch-not-string": '{"type":"subscribe","topic":"t","since_seq":1,"epoch":7,"request_id":"r"}',
    "unsubscribe": '{"type":"unsubscribe","topic":"orders","client_id":"c","request_id":"u1"}',
    "publish": publish('{"order":42}', ',"request_id":"p1"'),
    "publish-nested": publish('{"a":[1,2.5,"\\u00e9",{"b":[[{"c":null}]]}],"t":true,"f":false}'),
    "publish-null-payload": publish("null"),
    "publish-string-escapes": publish('"q\\"uote \\\\ \\/ \\b\\f\\n\\r\\t \\u2603 \\ud83d\\ude00"'),
    "publish-big-numbers": publish("[1E+2,-0,10.250,123456789012345678901234567890,1.7976931348623157e308,5e-324,1e-400]"),
    "publish-number-out-of-range": publish("1e400"),
    "publish-lone-surrogate": publish('["\\ud800"]'),
    "publish-no-payload": '{"type":"publish","topic":"t","message":{"id":"%s"}}' % UUID,
    "publish-bad-uuid": '{"type":"publish","topic":"t","message":{"id":"nope","payload":1},"request_id":"r1"}',
    "publish-uuid-forms": '{"type":"publish","topic":"t","message":{"id":"{550E8400-E29B-41D4-A716-446655440000}","payload":1}}',
    "publish-escaped-keys": '{"t\\u0079pe":"publish","topic":"t","message":{"\\u0069d":"%s","pay\\u006coad":{"k\\"ey":1}}}'
    % UUID,
    "publish-spaced": ' { "type" : "publish" , "topic" : "t" , "message" : { "id" : "%s" , "payload" : [ 1 , "x" ] } } \n'
    % UUID,
    "duplicate-type": '{"type":"ping","type":"subscribe"}',
    "duplicate-message": '{"type":"publish","topic":"t","message":{"id":"%s","payload":1,"payload":2},"message":5}'
    % UUID,
    "duplicate-payload-keys": publish('{"a":1,"a":2}'),
    "deep-payload": publish("[" * 130 + "]" * 130),
    "empty-object": "{}",
    "not-an-object": "[1,2]",
    "unknown-type": '{"type":"dance","request_id":"r1"}',
    "request-id-not-string": '{"type":"ping","request_id":5}',
    "truncated": '{"type":"publish","topic":"t","message":{"id":"%s","payload":{"a":' % UUID,
}

REST_BODY = {
    "name": '{"name":"orders"}',
    "name-every-char": '{"name":"AZaz09_-.:"}',
    "name-255": '{"name":"%s"}' % ("a" * 255),
    "name-256": '{"name":"%s"}' % ("a" * 256),
    "name-empty": '{"name":""}',
    "name-space": '{"name":"my topic"}',
    "name-unicode": '{"name":"caf\\u00e9"}',
    "name-slash": '{"name":"a/b"}',
    "name-nul": '{"name":"a\\u0000"}',
    "name-escaped": '{"name":"ord\\u0065rs"}',
    "name-null": '{"name":null}',
    "name-number": '{"name":1}',
    "name-duplicate": '{"name":"first","name":"second"}',
    "name-missing": '{"other":"x"}',
    "message": '{"id":"%s","payload":{"order":42}}' % UUID,
    "message-null-payload": '{"id":"%s","payload":null}' % UUID,
    "message-no-payload": '{"id":"%s"}' % UUID,
    "message-bad-uuid": '{"id":"550e8400","payload":1}',
    "message-urn-uuid": '{"id":"urn:uuid:%s","payload":[]}' % UUID,
    "message-simple-uuid": '{"id":"%s","payload":"s"}' % UUID.replace("-", ""),
    "message-duplicate-payload": '{"id":"%s","payload":1,"payload":{"x":2}}' % UUID,
    "message-big-number": '{"id":"%s","payload":100000000000000000000000000000000000000000007}' % UUID,
    "empty-object": "{}",
    "array": "[]",
    "plain-name": "orders",
}


# frame_split: config byte bits 0-1 limit (0: 1 MiB, 1: byte 1, 2: 125,
# 3: 65536), bit 2 raw stream, bit 3 leftover, bits 4-7 count of chunk sizes.
TEXT, BINARY, CONT, PING, PONG, CLOSE = 0, 2, 3, 5, 6, 7
FIN = 8


def config(limit=0, raw=False, leftover=False, sizes=b""):
    assert len(sizes) < 16
    byte = limit | (4 if raw else 0) | (8 if leftover else 0) | (len(sizes) << 4)
    return bytes([byte])


def record(kind, payload=b"", fin=True, encoding=0, mask=None, breakage=None, declared=None):
    if isinstance(payload, str):
        payload = payload.encode()
    assert len(payload) < 256
    head = kind | (FIN if fin else 0) | (encoding << 4)
    extra = b""
    if encoding == 3:
        extra += struct.pack(">Q", declared)
    if mask is not None:
        head |= 0x40
        extra += bytes(mask)
    if breakage is not None:
        head |= 0x80
        extra += bytes([breakage])
    return bytes([head, len(payload)]) + extra + payload


def split_input(records, limit=0, small=0, leftover=False, sizes=b"\x01"):
    return config(limit, False, leftover, sizes) + bytes([small]) + sizes + b"".join(records)


def masked_frame(opcode, payload, fin=True, mask=b"\x11\x22\x33\x44"):
    out = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        out += bytes([0x80 | n])
    elif n < 65536:
        out += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        out += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return out + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


PING_JSON = '{"type":"ping","request_id":"z"}'
FRAME_SPLIT = {
    "raw-text-ping": config(raw=True, sizes=b"\x01") + b"\x00\x01" + masked_frame(1, PING_JSON.encode()),
    "raw-two-frames-leftover": config(raw=True, leftover=True, sizes=b"\x05\x03")
    + b"\x00\x05\x03"
    + masked_frame(1, PING_JSON.encode())
    + masked_frame(2, b'{"type":"subscribe","topic":"t"}'),
    "raw-16-bit-length": config(raw=True, sizes=b"\x07")
    + b"\x00\x07"
    + masked_frame(1, publish('"%s"' % ("x" * 150)).encode()),
    "raw-64-bit-max-length": config(raw=True, sizes=b"\x02") + b"\x00\x02" + b"\x82\xff" + b"\xff" * 8 + b"\x11\x22\x33\x44",
    "text": split_input([record(TEXT, PING_JSON)]),
    "text-chunks-of-3": split_input([record(TEXT, PING_JSON)], sizes=b"\x03"),
    "binary-json": split_input([record(BINARY, '{"type":"unsubscribe","topic":"t"}')], sizes=b"\x02\x09"),
    "publish": split_input([record(TEXT, publish('{"order":42}'))], sizes=b"\x04\x00\x0b"),
    "fragmented": split_input(
        [record(TEXT, '{"type":', fin=False), record(CONT, '"ping"', fin=False), record(CONT, "}", fin=True)],
        sizes=b"\x01\x02",
    ),
    "control-between-fragments": split_input(
        [record(TEXT, '{"type":"pi', fin=False), record(PING, "hb"), record(PONG), record(CONT, 'ng"}', fin=True)],
        leftover=True,
        sizes=b"\x06\x01",
    ),
    "utf8-split-across-fragments": split_input(
        [record(TEXT, b'{"type":"ping","request_id":"\xe2', fin=False), record(CONT, b'\x82\xac"}')],
        sizes=b"\x01",
    ),
    "invalid-utf8-text": split_input([record(TEXT, b'{"type":"\xff"}')]),
    "invalid-utf8-binary": split_input([record(BINARY, b'{"type":"\xff"}')]),
    "16-bit-and-64-bit-encodings": split_input(
        [record(TEXT, PING_JSON, encoding=1), record(BINARY, PING_JSON, encoding=2, mask=b"\x00\x00\x00\x00")],
        sizes=b"\x01\x0d",
    ),
    "declared-length-oversized": split_input([record(BINARY, "x", encoding=3, declared=(1 << 63) + 5)]),
    "declared-length-lies": split_input([record(TEXT, PING_JSON, encoding=3, declared=3), record(TEXT, PING_JSON)]),
    "small-limit-fragments": split_input(
        [record(TEXT, "a" * 40, fin=False), record(CONT, "a" * 40, fin=False), record(CONT, "a" * 40)],
        limit=1,
        small=100,
        sizes=b"\x10",
    ),
    "limit-125-exact": split_input([record(BINARY, "b" * 125), record(BINARY, "b" * 126)], limit=2, sizes=b"\x20"),
    "limit-zero": split_input([record(TEXT, ""), record(TEXT, "x")], limit=1, small=0),
    "close-with-code": split_input([record(TEXT, PING_JSON), record(CLOSE, b"\x03\xe8bye"), record(TEXT, PING_JSON)]),
    "close-empty": split_input([record(CLOSE)]),
    "close-bad-code": split_input([record(CLOSE, b"\x03\xec")]),
    "close-one-byte": split_input([record(CLOSE, b"\x03")]),
    "ping-not-fin": split_input([record(PING, "p", fin=False)]),
    "ping-126": split_input([record(PING, "p" * 126)]),
    "reserved-bit": split_input([record(TEXT, PING_JSON, breakage=0)]),
    "unmasked": split_input([record(TEXT, PING_JSON, breakage=1)]),
    "opcode-3": split_input([record(TEXT, PING_JSON, breakage=2)]),
    "continuation-without-start": split_input([record(CONT, PING_JSON)]),
    "data-inside-fragments": split_input([record(TEXT, "{", fin=False), record(TEXT, "}")]),
}


# inflate: byte 0 bits 0-1 limit (0: 1 MiB, 1: byte 1, 2: 64 * byte 1,
# 3: 65536), bits 2-5 deflate level; byte 1 small limit; byte 2 fragment
# size (0: 255); then the data, taken as a compressed message.
def inflate_input(data, limit=0, small=0, level=6, fragment=0):
    return bytes([limit | (level << 2), small, fragment]) + data


def deflated(message, level=6):
    """Raw deflate, sync-flushed, without its 00 00 ff ff tail (RFC 7692)."""
    compress = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = compress.compress(message) + compress.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def finished(message):
    compress = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compress.compress(message) + compress.flush()


PUBLISH_JSON = publish('{"order":42,"note":"%s"}' % ("leave it at the door " * 20)).encode()
INFLATE = {
    "publish": inflate_input(deflated(PUBLISH_JSON)),
    "publish-fragmented": inflate_input(deflated(PUBLISH_JSON), fragment=7),
    "publish-stored": inflate_input(deflated(PUBLISH_JSON, level=0), level=0),
    "publish-limit-exact": inflate_input(deflated(b"x" * 128), limit=2, small=2, level=9),
    "publish-limit-one-under": inflate_input(deflated(b"x" * 128), limit=1, small=127),
    "empty": inflate_input(deflated(b"")),
    "nothing": inflate_input(b""),
    "bomb": inflate_input(deflated(b"a" * (4 << 20), level=9), limit=3),
    "final-block": inflate_input(finished(PING_JSON.encode())),
    "final-block-then-more": inflate_input(finished(PING_JSON.encode()) + b"\x00"),
    "invalid-utf8": inflate_input(deflated(b'{"type":"\xff"}')),
    "garbage": inflate_input(b"\xff" * 32, fragment=3),
    "truncated": inflate_input(deflated(PUBLISH_JSON)[:40]),
}


def write(target, seeds):
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    for name, data in seeds.items():
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(directory, "seed-" + name), "wb") as f:
            f.write(data)


write("client_message", CLIENT_MESSAGE)
write("rest_body", REST_BODY)
write("frame_split", FRAME_SPLIT)
write("inflate", INFLATE)
