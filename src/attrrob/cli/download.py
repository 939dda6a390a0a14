"""`attrrob download --dataset D --out data/raw/D [--mirror DIR]`: fetch and verify a data set's raw files."""

from __future__ import annotations

import argparse

from ..errors import one_line_errors


def build_parser() -> argparse.ArgumentParser:
    from ..registry import dataset_names

    parser = argparse.ArgumentParser(
        prog="attrrob download",
        description="Fetch a data set's raw files from the official addresses (or copy them from a local "
                    "mirror folder) and verify their pinned checksums. Files that already verify are kept.")
    parser.add_argument("--dataset", required=True, choices=dataset_names())
    parser.add_argument("--out", required=True, help="raw directory to fill, e.g. data/raw/mnist")
    parser.add_argument("--mirror", default=None,
                        help="local folder holding the raw files under their official names (no network used)")
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    from ..data import download

    args = build_parser().parse_args(argv)
    files = download(args.dataset, args.out, mirror=args.mirror)
    for name, hashes in files.items():
        print(f"{args.out}/{name}  sha256 {hashes['sha256']}  ({hashes['size']} bytes, verified)")


if __name__ == "__main__":
    main()
