#!/usr/bin/env python3
"""Vendor GraphiQL's browser files into `gateway/http/graphiql/vendor/` from the npm registry.

    python scripts/vendor_graphiql.py           # fetch the pins, write the files and lock.json
    python scripts/vendor_graphiql.py --check   # fetch, compare with the committed files; exit 1

For each pinned package `npm pack` downloads the tarball; npm checks it against the integrity the
registry publishes, and this script checks it again (sha512 of the tarball against
`npm view <package>@<version> dist.integrity`) before copying the listed files out of it. The
files are copied byte for byte and `lock.json` records, for each package, its version and tarball
integrity, and for each file its size, sha256 and the sha384 SRI value the page's `integrity=`
attributes carry. Running it again reproduces the committed files exactly (`git diff` is empty);
to upgrade, edit `PINS` and run it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "gateway" / "http" / "graphiql" / "vendor"
LOCK = VENDOR / "lock.json"


@dataclass(frozen=True)
class Pin:
    """One npm package: its files (path in the tarball, name under vendor/<directory>/)."""

    name: str
    version: str
    files: tuple[str, ...]

    @property
    def directory(self) -> str:
        # "@graphiql/plugin-explorer" 1.0.2 -> "graphiql-plugin-explorer-1.0.2": the version is in
        # every asset URL, so the gateway can let browsers cache them for good.
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}"


# The UMD builds need no bundler. These are also the versions Strawberry 0.341's own GraphiQL page
# loads from unpkg (its integrity values match these files), so they are known to work together.
# Order matters: the page loads the scripts in this order.
PINS = (
    Pin("react", "18.2.0", ("umd/react.production.min.js",)),
    Pin("react-dom", "18.2.0", ("umd/react-dom.production.min.js",)),
    Pin("graphiql", "3.8.3", ("graphiql.min.js", "graphiql.min.css")),
    Pin("@graphiql/plugin-explorer", "1.0.2", ("dist/index.umd.js", "dist/style.css")),
)


def sri(data: bytes, algorithm: str = "sha384") -> str:
    """A Subresource Integrity value (`sha384-<base64>`) of `data`."""
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def npm(*args: str, cwd: Path) -> str:
    # The machine's own npm, with its registry configuration; the arguments are this script's.
    command = ["npm", *args]
    result = subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True)  # noqa: S603
    return result.stdout


def fetch(pin: Pin, workdir: Path) -> tuple[str, dict[str, bytes]]:
    """The registry's tarball integrity for `pin` and the pinned files' bytes, verified."""
    spec = f"{pin.name}@{pin.version}"
    published = json.loads(npm("view", spec, "dist.integrity", "--json", cwd=workdir))
    [packed] = json.loads(
        npm("pack", spec, "--json", "--pack-destination", str(workdir), cwd=workdir)
    )
    tarball = (workdir / packed["filename"]).read_bytes()
    actual = sri(tarball, "sha512")
    if not (actual == published == packed["integrity"]):
        raise SystemExit(
            f"{spec}: the tarball's integrity {actual} is not the registry's {published}"
        )
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for source in pin.files:
            member = archive.extractfile(f"package/{source}")
            if member is None:
                raise SystemExit(f"{spec}: {source} is not a file in the tarball")
            files[f"{pin.directory}/{Path(source).name}"] = member.read()
    return actual, files


def build(workdir: Path) -> tuple[dict[str, object], dict[str, bytes]]:
    """The lock's content and every vendored file, by path under vendor/."""
    packages: list[dict[str, object]] = []
    every: dict[str, bytes] = {}
    for pin in PINS:
        integrity, files = fetch(pin, workdir)
        packages.append(
            {
                "name": pin.name,
                "version": pin.version,
                "tarball_integrity": integrity,
                "files": [
                    {
                        "source": source,
                        "path": path,
                        "bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "integrity": sri(data),
                    }
                    for source, (path, data) in zip(pin.files, files.items(), strict=True)
                ],
            }
        )
        every.update(files)
    lock: dict[str, object] = {
        "comment": "Written by scripts/vendor_graphiql.py from the npm registry; do not edit.",
        "packages": packages,
    }
    return lock, every


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed files; write nothing"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vendor-graphiql-") as tmp:
        lock, files = build(Path(tmp))
    files["lock.json"] = (json.dumps(lock, indent=2) + "\n").encode()
    committed = {
        path.relative_to(VENDOR).as_posix() for path in VENDOR.rglob("*") if path.is_file()
    }
    if args.check:
        differ = sorted(
            path
            for path, data in files.items()
            if not (VENDOR / path).is_file() or (VENDOR / path).read_bytes() != data
        )
        extra = sorted(committed - set(files))
        for path in differ:
            print(f"differs from the registry: {path}", file=sys.stderr)
        for path in extra:
            print(f"not from the registry: {path}", file=sys.stderr)
        if differ or extra:
            return 1
        print(f"{len(files)} files match the pinned packages byte for byte")
        return 0
    for path in committed - set(files):
        (VENDOR / path).unlink()
    for path, data in files.items():
        target = VENDOR / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        print(f"{len(data):>9}  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
