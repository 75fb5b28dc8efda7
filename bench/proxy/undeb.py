#!/usr/bin/env python3
"""Unpacks .deb files under a folder, as `dpkg-deb -x` does, with Python's
standard library alone: the lent machine may have no dpkg.

A .deb is an `ar` archive whose `data.tar.{xz,gz,bz2}` holds the files;
`tarfile` reads those compressions (not zstd, which Debian 12's packages
do not use: a .deb that does is refused by name).

    undeb.py ROOT FILE.deb...
"""

import io
import pathlib
import sys
import tarfile


def members(data):
    """(name, bytes) of each member of an ar archive."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    at = 8
    while at + 60 <= len(data):
        header = data[at:at + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        yield name, data[at + 60:at + 60 + size]
        at += 60 + size + (size % 2)


def unpack(deb, root):
    for name, body in members(deb.read_bytes()):
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise SystemExit(f"{deb}: {name} is zstd, which Python's tarfile cannot read")
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                tar.extractall(root, filter="tar")
            return
    raise SystemExit(f"{deb}: no data.tar member")


def main():
    root = pathlib.Path(sys.argv[1])
    root.mkdir(parents=True, exist_ok=True)
    for deb in sys.argv[2:]:
        unpack(pathlib.Path(deb), root)


if __name__ == "__main__":
    main()
