#!/usr/bin/env python3
"""Checks read_export.py against the golden exports: every damaged file is refused with
one line on standard error and exit status 1, never a traceback.

Usage: test_read_export.py   (from the repository root; needs msgpack and blake3)
"""

import contextlib
import io
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import read_export  # noqa: E402

GOLDEN = pathlib.Path("fixtures/golden")
MAC_KEY = GOLDEN / "mac_key.hex"
passed, failed = 0, 0


def run(data, *extra, suffix=".msgpack"):
    """Runs the reader's main on `data`; returns (status, stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / f"export{suffix}"
        path.write_bytes(data)
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            status = read_export.main([str(path), *extra])
        return status, err.getvalue()


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAILED {name}: {detail}", file=sys.stderr)


def refused(name, data, *extra, suffix=".msgpack"):
    try:
        status, err = run(data, *extra, suffix=suffix)
    except Exception as e:  # a traceback is the defect this test exists for
        check(name, False, f"raised {type(e).__name__}: {e}")
        return
    check(name, status == 1 and len(err.splitlines()) == 1 and "Traceback" not in err,
          f"status {status}, stderr {err!r}")


def main():
    mac = ("--mac-key-file", str(MAC_KEY))
    v2 = (GOLDEN / "all_variants.msgpack").read_bytes()
    jsonl = (GOLDEN / "all_variants.export.jsonl").read_bytes()
    v1 = (GOLDEN / "v1" / "all_variants.msgpack").read_bytes()

    check("v2 verifies with its mac", run(v2, *mac)[0] == 0)
    check("json lines verify with the mac", run(jsonl, *mac, suffix=".jsonl")[0] == 0)
    check("v1 reads", run(v1)[0] == 0)
    refused("v1 has no mac", v1, *mac)
    refused("trailing garbage", v2 + b"x")
    refused("a second export appended", v2 + v2)
    refused("truncated", v2[: len(v2) // 2])
    refused("not a key", v2, "--mac-key-file", str(GOLDEN / "all_variants.msgpack"))
    with tempfile.TemporaryDirectory() as tmp:
        other = pathlib.Path(tmp) / "other.key"
        other.write_text("17" * 32 + "\n")
        refused("another key", v2, "--mac-key-file", str(other))

    unpacker = read_export.msgpack.Unpacker(raw=False)
    unpacker.feed(v2)
    unpacker.unpack()
    header_len = unpacker.tell()
    for at in range(header_len):
        for bit in range(8):
            damaged = bytearray(v2)
            damaged[at] ^= 1 << bit
            refused(f"header byte {at} bit {bit}", bytes(damaged))
    for at in range(len(v2)):
        damaged = bytearray(v2)
        damaged[at] ^= 0x01
        refused(f"byte {at} with the mac", bytes(damaged), *mac)
    for at in range(0, len(jsonl)):
        damaged = bytearray(jsonl)
        damaged[at] ^= 0x01
        refused(f"json lines byte {at} with the mac", bytes(damaged), *mac, suffix=".jsonl")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
